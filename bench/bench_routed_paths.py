"""The latest-arriving register inputs of a placed and routed design, from nextpnr's own timing.

    python bench/bench_routed_paths.py BUILD/report.json [--top 40] [--slack-ns 6.67]

``BUILD/report.json`` is the report ``qhw synth`` keeps (nextpnr ``--report`` with
``--detailed-timing-report``). nextpnr reports one critical path per clock; its per-net table gives,
for every net, the arrival time at each of its sinks (routing included). Each line here is one net's
latest sink: the arrival in ns, the net's fan-out, the driver's port and the net's name (Yosys names:
the register or logic it feeds), worst first, one line per name pattern (digits folded, so a bus
or eight lanes count once). ``--slack-ns`` (a clock period) also counts the sinks that arrive later.
Unlike ``bench_paths.py`` (the Yosys netlist, a crude delay model, seconds), these are the placed
design's real figures; it takes a place-and-route to get them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="report.json of a qhw synth build directory")
    ap.add_argument("--top", type=int, default=40, help="lines to list (default 40)")
    ap.add_argument("--slack-ns", type=float, default=None, help="clock period: count the sinks arriving later")
    args = ap.parse_args(argv)
    try:
        with open(args.report) as f:
            nets = json.load(f)["detailed_net_timings"]
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_routed_paths: {args.report}: not a nextpnr report with detailed timing ({e})", file=sys.stderr)
        return 1
    rows = []
    late = 0
    for net in nets:
        sinks = net.get("endpoints") or []
        if not sinks:
            continue
        arrivals = [s["delay"][-1] for s in sinks]
        if args.slack_ns is not None:
            late += sum(a > args.slack_ns for a in arrivals)
        rows.append((max(arrivals), len(sinks), net["port"], net["net"]))
    rows.sort(key=lambda r: -r[0])
    seen = set()
    shown = 0
    for arrival, fanout, port, name in rows:
        key = re.sub(r"\d+", "#", name)
        if key in seen:
            continue
        seen.add(key)
        print(f"{arrival:6.2f} ns  fan-out {fanout:4d}  {port:5s} {name}")
        shown += 1
        if shown >= args.top:
            break
    if args.slack_ns is not None:
        print(f"{late} sinks arrive after {args.slack_ns} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
