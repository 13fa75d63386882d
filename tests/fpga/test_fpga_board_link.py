"""Host driver -> bit-level UART model -> board top (accelerator) -> results equal the golden model."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qhw.fpga.board_top import BoardTop
from qhw.fpga.host import BoardLink, LinkError, program_packets
from qhw.fpga.protocol import fifo_depth, info_bytes, packet_bytes
from qhw.fpga.simlink import run_with_host
from qhw.hw.config import ArrayConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hw"))
from hw_cases import make_case  # noqa: E402  (golden model: matmul_exact + Requant.apply)


def test_board_link_gemms_match_golden_model():
    cfg = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single", "tflite"))
    cases = [make_case(cfg, 3, 5, 3, mode="single", seed=1), make_case(cfg, 2, 2, 2, mode="tflite", seed=2)]
    top = BoardTop(config=cfg, divisor=4)

    def host(transport):
        link = BoardLink(transport, cfg)
        info = link.check()
        return info, [link.run(case.program) for case in cases]

    start = time.monotonic()
    info, results = run_with_host(top, host)
    assert info == info_bytes(cfg)
    for case, y in zip(cases, results):
        assert np.array_equal(y, case.expected)
    assert time.monotonic() - start < 60


def test_packets_follow_loader_order():
    cfg = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",))
    case = make_case(cfg, 3, 3, 3, mode="single", seed=3)
    ops = bytes(p[0] for p in program_packets(case.program))
    # K tiles 2 (2 + 1 rows), N tiles 2: cmd; per N tile: W W A A A, P W A A A
    assert ops == b"C" + (b"WWAAA" + b"PWAAA") * 2
    sizes = packet_bytes(cfg)
    assert all(len(p) == 1 + sizes[{"C": "cmd", "P": "params", "W": "weights", "A": "act"}[chr(p[0])]]
               for p in program_packets(case.program))
    assert fifo_depth(cfg) >= 2 * (1 + max(sizes.values()))


def test_board_link_detects_wrong_bitstream():
    built = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",))
    other = ArrayConfig(rows=2, cols=2, max_k=32, acc_depth=8, rounding=("single",))
    with pytest.raises(LinkError, match=r"^board reports .* \(bitstream built from another manifest\?\)$"):
        run_with_host(BoardTop(config=built, divisor=4), lambda t: BoardLink(t, other).check())


def test_board_link_uint8_onnx_per_tensor():
    cfg = ArrayConfig(rows=2, cols=3, act_signed=False, per_channel=False, max_k=8, acc_depth=4,
                      rounding=("onnx",))
    case = make_case(cfg, 2, 3, 4, mode="onnx", seed=4)
    y = run_with_host(BoardTop(config=cfg, divisor=5), lambda t: BoardLink(t, cfg).run(case.program))
    assert np.array_equal(y, case.expected)


def test_board_link_ecp5_pipelined_pes():
    """The board top with pipelined DSP PEs (portable equivalent in simulation): K and N two tiles
    each, results still equal the golden model."""
    cfg = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("tflite",), pe="ecp5-pipelined")
    case = make_case(cfg, 3, 4, 3, mode="tflite", seed=5)
    y = run_with_host(BoardTop(config=cfg, divisor=4), lambda t: BoardLink(t, cfg).run(case.program))
    assert np.array_equal(y, case.expected)


def test_board_rejects_unknown_opcode():
    cfg = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",))

    def host(transport):
        transport.write(b"Z")
        BoardLink(transport, cfg)._frame()

    with pytest.raises(LinkError, match=r"^board rejected opcode 0x5a$"):
        run_with_host(BoardTop(config=cfg, divisor=4), host)
