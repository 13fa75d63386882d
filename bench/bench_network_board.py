"""The network board top with its UART (divisor 4) in Amaranth's simulator, the model embedded: one
inference of a small Dense model (seed 11) on a 4x4 engine, bit-exact, and an accelerator opcode
answered ``unknown_opcode`` (too slow for CI: ~6,000 cycles at ~150 cycles per CPU second).

    python bench/bench_network_board.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fpga"))


def main() -> int:
    from test_fpga_network_board import _infer, make_tiny

    from qhw.executor import run_batched
    from qhw.fpga.engine_host import EngineSession
    from qhw.fpga.host import BoardLink
    from qhw.fpga.network_top import NetworkBoardTop
    from qhw.fpga.protocol import ERRORS, OPCODES, REPLIES, encode
    from qhw.fpga.simlink import run_with_host

    _, qm, x, engine, program = make_tiny(Path(tempfile.mkdtemp(prefix="netboard")))

    def host(t):
        link = BoardLink(t, engine)
        t.write(encode(OPCODES["cmd"], 0, bytes(4)))
        reply = link._frame()
        return reply, _infer(EngineSession(link, program), program, qm, x[:1]), t.cycles

    t0 = time.perf_counter()
    top = NetworkBoardTop(engine=engine, divisor=4, image=program.to_bytes())
    reply, y, cycles = run_with_host(top, host)
    ok = (reply[0] == REPLIES["error"] and reply[2] == bytes([ERRORS["unknown_opcode"], OPCODES["cmd"]])
          and np.array_equal(y, run_batched(qm.graph, x[:1], integer=True)))
    print(json.dumps({"bit_exact": bool(ok), "cycles": cycles, "wall_s": round(time.perf_counter() - t0, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
