"""Worst register-to-register paths of a Yosys ECP5 netlist, estimated in seconds (place-and-route of
the network engine takes the better part of an hour on the shared machine, and reports one path).

    python bench/bench_paths.py BUILD/qhw_top.json [--top 40] [--detail 8]

``BUILD/qhw_top.json`` is the netlist ``qhw synth --board ulx3s-* -o BUILD`` leaves (``synth_ecp5``
output: ``LUT4``, ``CCU2C``, ``PFUMX``, ``L6MUX21``, ``TRELLIS_FF``, ``DP16KD``, ``MULT18X18D``,
``TRELLIS_DPR16X4``). Arrival times use a crude delay model, not nextpnr's: every routed hop 0.7 ns,
a LUT 0.45 ns, a carry step 0.06 ns (no route inside a chain), a block RAM's clock-to-out 3.0 ns, an
unregistered ``MULT18X18D`` 4.2 ns. The absolute numbers are not an Fmax; the ranking (which
paths are deep: logic levels and carry chains between registers) is what to fix first. Each line: the
estimate, the hop count (LUT levels, carry cells), the source register's net and the destination
(cell type and pin, its register's net); ``--detail`` paths also list the cells with their ``src``
lines in ``qhw/`` (file:line). Paths are deduplicated by (source, destination) name. ``--fanout-ns X`` adds X ns
to a routed hop per doubling of its net's fan-out (0 by default): a wide enable's route then counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import sys

ROUTE, LUT, CARRY, BRAM_CQ, FF_CQ, MULT, SETUP = 0.7, 0.45, 0.06, 3.0, 0.45, 4.2, 0.2
LOGIC = ("LUT4", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4")


def _registered_mult(cell) -> bool:
    p = cell["parameters"]
    return p.get("REG_OUTPUT_CLK", "NONE") != "NONE" or p.get("REG_PIPELINE_CLK", "NONE") != "NONE"


def _arcs(cell, out_port):
    """Combinational arcs into ``out_port``: (input port, all bits?, delay, routed)."""
    t, con = cell["type"], cell["connections"]
    if t == "LUT4":
        return [(p, False, LUT, True) for p in "ABCD" if p in con]
    if t in ("PFUMX", "L6MUX21"):
        sel = "C0" if t == "PFUMX" else "SD"
        data_in = ("ALUT", "BLUT") if t == "PFUMX" else ("D0", "D1")
        return [(p, False, 0.25, False) for p in data_in] + [(sel, False, LUT, True)]
    if t == "CCU2C":
        half0 = ("A0", "B0", "C0", "D0")
        both = half0 + ("A1", "B1", "C1", "D1")
        if out_port == "COUT":
            return [("CIN", False, CARRY, False)] + [(p, False, LUT, True) for p in both]
        if out_port == "S0":
            return [("CIN", False, 0.3, False)] + [(p, False, 0.55, True) for p in half0]
        return [("CIN", False, 0.35, False)] + [(p, False, 0.6, True) for p in both]
    if t == "TRELLIS_DPR16X4":
        return [("RAD", True, 0.6, True)]
    if t == "MULT18X18D" and not _registered_mult(cell):
        return [(p, False, MULT, True) for p in con if re.fullmatch(r"[AB]\d+", p)]
    return None


class Netlist:
    def __init__(self, path, fanout_ns: float = 0.0):
        self.fanout_ns = fanout_ns
        with open(path) as f:
            d = json.load(f)
        top = max(d["modules"].values(), key=lambda mod: len(mod.get("cells", {})))
        self.cells = top["cells"]
        self.names = {}
        for n, v in top["netnames"].items():
            for b in v["bits"]:
                if isinstance(b, int) and (b not in self.names or self._better(n, self.names[b])):
                    self.names[b] = n
        self.driver = {}
        for cn, c in self.cells.items():
            for p, direction in c.get("port_directions", {}).items():
                if direction == "output":
                    for i, b in enumerate(c["connections"].get(p, [])):
                        if isinstance(b, int):
                            self.driver[b] = (cn, p, i)
        self.arr, self.prev = {}, {}
        self.fan = collections.Counter()
        for c in self.cells.values():
            for p, direction in c.get("port_directions", {}).items():
                if direction == "input":
                    self.fan.update(b for b in c["connections"].get(p, []) if isinstance(b, int))

    def _route(self, net):
        return ROUTE + self.fanout_ns * math.log2(max(1, self.fan[net]))

    @staticmethod
    def _better(new, old):
        return (old.startswith("$") and not new.startswith("$")) or (not new.startswith("$") and len(new) < len(old))

    def _start(self, cell):
        t = cell["type"]
        if t == "TRELLIS_FF":
            return FF_CQ
        if t == "DP16KD":
            return BRAM_CQ
        if t == "MULT18X18D" and _registered_mult(cell):
            return 1.0
        if t == "TRELLIS_IO":
            return 0.0
        return None

    def arrival(self, net):
        """Arrival at ``net`` (iterative, memoized; a combinational loop is cut where it is met)."""
        stack = [net]
        while stack:
            n = stack[-1]
            if n in self.arr and self.arr[n] is not None:
                stack.pop()
                continue
            if n not in self.driver:
                self.arr[n], self.prev[n] = 0.0, None
                stack.pop()
                continue
            cn, port, _ = self.driver[n]
            cell = self.cells[cn]
            sd = self._start(cell)
            arcs = None if sd is not None else _arcs(cell, port)
            if sd is not None or arcs is None:
                self.arr[n], self.prev[n] = (sd or 0.0), None
                stack.pop()
                continue
            ins = []
            for ip, all_bits, delay, routed in arcs:
                bits = cell["connections"].get(ip, [])
                for b in (bits if all_bits else bits[:1]):
                    if isinstance(b, int):
                        ins.append((b, delay + (self._route(b) if routed else 0.0)))
            pending = [b for b, _ in ins if b not in self.arr]
            if pending:
                self.arr[n] = None          # on the stack: a loop back here sees 0
                stack.extend(pending)
                continue
            best, bnet = 0.0, None
            for b, extra in ins:
                v = (self.arr[b] or 0.0) + extra
                if v > best:
                    best, bnet = v, b
            self.arr[n], self.prev[n] = best, bnet
            stack.pop()
        return self.arr[net] or 0.0

    def endpoints(self):
        ends = []
        for cn, c in self.cells.items():
            t = c["type"]
            if t == "TRELLIS_FF":
                ports = ("DI", "CE", "LSR")
            elif t == "DP16KD" or (t == "MULT18X18D" and _registered_mult(c)):
                ports = [p for p, dd in c["port_directions"].items() if dd == "input" and not p.startswith("CLK")]
            elif t == "TRELLIS_DPR16X4":
                ports = ("DI", "WAD", "WRE")
            else:
                continue
            for p in ports:
                for b in c["connections"].get(p, []):
                    if isinstance(b, int):
                        ends.append((self.arrival(b) + ROUTE + SETUP, cn, p, b))
        ends.sort(key=lambda e: -e[0])
        return ends

    def path(self, net):
        chain = []
        while net is not None:
            chain.append(net)
            net = self.prev.get(net)
        return chain[::-1]

    def src(self, cn):
        parts = self.cells[cn]["attributes"].get("src", "").split("|")
        return ",".join(sorted({p.split("/qhw/")[-1].split(" ")[0] for p in parts if "/qhw/" in p}))

    def dest_name(self, cn):
        c = self.cells[cn]
        q = c["connections"].get("Q", [None])[0] if c["type"] == "TRELLIS_FF" else None
        return self.names.get(q, cn)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist", help="qhw_top.json of a qhw synth build directory (ECP5)")
    ap.add_argument("--top", type=int, default=40, help="paths to list (default 40)")
    ap.add_argument("--detail", type=int, default=8, help="paths listed cell by cell (default 8)")
    ap.add_argument("--fanout-ns", type=float, default=0.0,
                    help="extra ns per doubling of a routed net's fan-out (default 0)")
    args = ap.parse_args(argv)
    try:
        nl = Netlist(args.netlist, fanout_ns=args.fanout_ns)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_paths: {args.netlist}: not a Yosys JSON netlist ({e})", file=sys.stderr)
        return 1
    seen = collections.Counter()
    shown = 0
    for t, cn, port, b in nl.endpoints():
        chain = nl.path(b)
        src_name, dst_name = nl.names.get(chain[0], "?"), nl.dest_name(cn)
        key = (re.sub(r"\d+", "#", src_name), re.sub(r"\d+", "#", dst_name))
        seen[key] += 1
        if seen[key] > 1:
            continue
        shown += 1
        if shown > args.top:
            break
        kinds = [nl.cells[nl.driver[n][0]]["type"] for n in chain if n in nl.driver]
        print(f"{t:6.2f} ns  {len(chain)} hops ({sum(k in LOGIC for k in kinds)} lut, {kinds.count('CCU2C')} carry)"
              f"  {src_name} -> {nl.cells[cn]['type']}.{port} {dst_name}")
        if shown <= args.detail:
            last = None
            for n in chain:
                if n in nl.driver:
                    s = nl.src(nl.driver[n][0])
                    if s != last:
                        print(f"          {nl.arr[n]:6.2f} {nl.cells[nl.driver[n][0]]['type']:10s} {s}")
                    last = s
    return 0


if __name__ == "__main__":
    sys.exit(main())
