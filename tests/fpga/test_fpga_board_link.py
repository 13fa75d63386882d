"""Host driver -> bit-level UART model -> board top (link + accelerator) -> results equal the golden model,
with faults injected on the link (seeds stated)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth_sim import run_sim

from qhw.fpga.board_top import BoardTop
from qhw.fpga.host import BoardLink, LinkError, program_packets
from qhw.fpga.link import FrameParser, FrameSender, LinkControl, ReceiveFifo
from qhw.fpga.payload import board_info_bytes, fifo_depth, packet_bytes
from qhw.fpga.protocol import (
    ACCEL_STREAMS,
    ERRORS,
    INFO_LAYOUT,
    OPCODES,
    OVERHEAD,
    REPLIES,
    crc16,
    encode,
    info_bytes,
    parse_info,
)
from qhw.fpga.simlink import Faults, run_with_host
from qhw.fpga.uart import UARTRx, UARTTx
from qhw.hw.config import ArrayConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hw"))
from hw_cases import make_case  # noqa: E402  (golden model: matmul_exact + Requant.apply)

CFG = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single", "tflite"))


def _top():
    return BoardTop(config=CFG, divisor=4)


def _case(seed=1):
    return make_case(CFG, 3, 5, 3, mode="single", seed=seed)


# ---------------------------------------------------------------------------- pure protocol


def test_crc_is_ccitt_false_and_frames_check_to_zero():
    assert crc16(b"123456789") == 0x29B1        # the catalogued check value of CRC-16/CCITT-FALSE
    frame = encode(OPCODES["act"], 7, b"\x01\x02")
    assert frame[:2] == b"\xa5\x5a" and len(frame) == OVERHEAD + 2
    assert crc16(frame[2:]) == 0


def test_info_frame_carries_every_manifest_parameter():
    cfg = ArrayConfig(rows=3, cols=2, max_k=300, acc_depth=17, act_signed=False, per_channel=False,
                      rounding=("onnx", "single"), requant_lanes=1)
    info = parse_info(board_info_bytes(cfg))
    assert info["parameters"] == cfg.to_manifest()["parameters"] | {"rounding": ["single", "onnx"]}
    assert info["fifo_depth"] == fifo_depth(cfg)
    with pytest.raises(ValueError, match="max_k holds 2 byte"):
        info_bytes(dict(cfg.to_manifest()["parameters"], max_k=70000), fifo_depth=256)


def test_info_frame_carries_requant_mul():
    """Serial lanes (a different schedule for the same model) are named in the info frame's pe byte."""
    cfg = ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=16, rounding=("single",), pe="ice40-dual",
                      requant_mul="serial", requant_lanes=1)
    info = parse_info(board_info_bytes(cfg))
    assert info["parameters"] == cfg.to_manifest()["parameters"]
    assert info["parameters"]["requant_mul"] == "serial"
    bad = bytearray(board_info_bytes(cfg))
    names = [name for name, _ in INFO_LAYOUT]
    bad[sum(n for _, n in INFO_LAYOUT[:names.index("pe")])] = 0x71      # a third requant_mul: none exists
    with pytest.raises(ValueError, match="unknown pe code 113"):
        parse_info(bytes(bad))


def test_packets_follow_loader_order():
    cfg = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",))
    case = make_case(cfg, 3, 3, 3, mode="single", seed=3)
    names = [n for n, _ in program_packets(case.program)]
    # K tiles 2 (2 + 1 rows), N tiles 2: cmd; per N tile: W W A A A, P W A A A
    assert "".join(n[0].upper() for n in names) == "C" + ("WWAAA" + "PWAAA") * 2
    sizes = packet_bytes(cfg)
    assert all(len(p) == sizes[n] for n, p in program_packets(case.program))
    assert fifo_depth(cfg) >= 4 * (OVERHEAD + max(sizes.values()))


# ---------------------------------------------------------------------------- UART alone


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_loopback_framing_error_and_overflow(divisor):
    """The transmitter's pin into the receiver: every byte arrives once, in order (random bytes and
    gaps, seed 3); then a byte with a bad stop bit driven on the pin raises ``frame_error`` once and
    delivers nothing, and a byte with ``ready`` low raises ``overflow`` once instead of ``valid``."""
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    loop = Signal(init=1)           # 1: the transmitter drives the receiver; 0: the testbench does
    pin = Signal(init=1)
    m.d.comb += rx.rx.eq(Mux(loop, tx.tx, pin))
    rng = np.random.default_rng(3)
    sent = [0x00, 0xFF, 0xA5, 0x5A, *(int(b) for b in rng.integers(0, 256, 12))]
    got, events = [], []

    async def watch(ctx):
        async for _clk, _rst, valid, data, ferr, ovf in ctx.tick().sample(rx.valid, rx.data, rx.frame_error,
                                                                        rx.overflow):
            if valid:
                got.append(data)
            if ferr or ovf:
                events.append("frame_error" if ferr else "overflow")

    async def bench(ctx):
        ctx.set(rx.ready, 1)
        for b in sent:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
            await ctx.tick().repeat(int(rng.integers(1, 3 * divisor)))
        await ctx.tick().repeat(12 * divisor)
        assert got == sent and events == []
        ctx.set(loop, 0)

        async def drive(bits):
            for bit in bits:
                ctx.set(pin, bit)
                await ctx.tick().repeat(divisor)
            ctx.set(pin, 1)
            await ctx.tick().repeat(2 * divisor)

        await drive([0, *[1, 0, 1, 1, 0, 0, 1, 0], 0])         # stop bit 0
        assert got == sent and events == ["frame_error"]
        ctx.set(rx.ready, 0)
        await drive([0, *[0] * 8, 1])
        assert got == sent and events == ["frame_error", "overflow"]
        ctx.set(rx.ready, 1)
        await drive([0, *[1, 1, 0, 0, 1, 1, 0, 1], 1])
        assert got == [*sent, 0xB3] and events == ["frame_error", "overflow"]

    run_sim(m, bench, processes=[watch])


# ---------------------------------------------------------------------------- frame parser alone


def test_frame_parser_resyncs_after_faults():
    """Garbage, a flipped bit, an oversize length, an unknown opcode, a truncated frame (timeout):
    each reported once, and every good frame after it comes out intact."""
    lengths = {OPCODES["act"]: 2, OPCODES["reset"]: 0}
    dut = FrameParser(lengths=lengths, timeout=40, max_payload=4)
    good = [encode(OPCODES["act"], s, bytes([s, 2 * s])) for s in range(6)]
    bad_crc = bytearray(good[1])
    bad_crc[7] ^= 0x10
    stream = [b"\x00\xa5\x13garbage" + good[0], bytes(bad_crc) + good[1],
              encode(OPCODES["act"], 9, bytes(5))[:6] + good[2],            # length 5 > max_payload
              encode(0x77, 3, b"\x01\x02") + good[3],                         # unknown opcode, CRC good
              good[4][:5], None, good[4], encode(OPCODES["reset"], 200)]
    frames, errors = [], []

    async def feed(ctx):
        for chunk in stream:
            if chunk is None:                                                 # line goes quiet
                await ctx.tick().repeat(60)
                continue
            for b in chunk:
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(10)

    async def watch(ctx):
        async for _clk, _rst, ev, code, detail in ctx.tick().sample(dut.err_valid, dut.err_code, dut.err_detail):
            if ev:
                errors.append((code, detail))

    async def take(ctx):
        # each frame's payload read from the parser's RAM while it is offered, then taken
        while True:
            await ctx.tick()
            if not ctx.get(dut.o.valid):
                continue
            f = ctx.get(dut.o.payload)
            payload = bytearray()
            for i in range(f.len):
                ctx.set(dut.rd_addr, i)
                await ctx.tick()
                payload.append(ctx.get(dut.rd_data))
            frames.append((f.op, f.seq, bytes(payload)))
            ctx.set(dut.o.ready, 1)
            await ctx.tick()
            ctx.set(dut.o.ready, 0)

    run_sim(dut, feed, processes=[watch], background=[take], deadline=1e-6 * 2000)
    assert frames == [(OPCODES["act"], s, bytes([s, 2 * s])) for s in range(5)] + [(OPCODES["reset"], 200, b"")]
    assert errors == [(ERRORS["bad_crc"], OPCODES["act"]), (ERRORS["bad_length"], OPCODES["act"]),
                      (ERRORS["unknown_opcode"], 0x77), (ERRORS["timeout"], 0)]


@pytest.mark.parametrize("stall", [False, True])
def test_frame_sender_constant_payload_from_logic(stall):
    """A frame of the ``constant`` opcode carries that payload (not the offered one) and other frames
    their own, from a register holding only ``held`` bytes: byte for byte ``protocol.encode``, with
    the byte stream always ready or ready on random cycles (seed 5)."""
    info = bytes(range(40, 47))
    dut = FrameSender(max_payload=8, held=2, constant={REPLIES["info"]: info})
    frames = [(REPLIES["info"], 3, b"\xff" * 7, info), (REPLIES["result"], 4, b"\x12\x34", b"\x12\x34"),
              (REPLIES["ack"], 5, b"", b""), (REPLIES["info"], 6, bytes(7), info)]
    out = bytearray()
    rng = np.random.default_rng(5)

    async def offer(ctx):
        for op, seq, offered, _ in frames:
            ctx.set(dut.i.payload, {"op": op, "seq": seq, "len": len(offered),
                                    "payload": int.from_bytes(offered, "little")})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(4 * sum(OVERHEAD + len(o) + 2 for _, _, o, _ in frames))

    async def consume(ctx):
        while True:
            ready = int(rng.integers(2)) if stall else 1
            ctx.set(dut.o.ready, ready)
            _, _, valid, byte = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(byte)

    run_sim(dut, offer, background=[consume])
    assert bytes(out) == b"".join(encode(op, seq, sent) for op, seq, _, sent in frames)


# ---------------------------------------------------------------------------- the whole board top


def test_board_link_gemms_match_golden_model():
    cases = [_case(1), make_case(CFG, 2, 2, 2, mode="tflite", seed=2)]

    def host(transport):
        link = BoardLink(transport, CFG)
        ys = [link.run(case.program) for case in cases]
        return link.recovered, ys

    recovered, results = run_with_host(_top(), host)
    assert recovered == 0
    for case, y in zip(cases, results):
        assert np.array_equal(y, case.expected)


@pytest.mark.parametrize("seed", [3])
def test_faults_flip_drop_duplicate_insert_recover(seed):
    """All four fault kinds in both directions at 1 % of bytes (seed 3): the GEMM is bit-exact (each
    result exactly once), and the host counted its recoveries."""
    cases = [_case(4)]
    faults = Faults(0.01, seed)

    def host(transport):
        link = BoardLink(transport, CFG)
        ys = [link.run(case.program) for case in cases]
        return link.recovered, ys

    recovered, results = run_with_host(_top(), host, faults=faults)
    assert faults.count > 0 and recovered > 0
    for case, y in zip(cases, results):
        assert np.array_equal(y, case.expected)


def test_garbage_and_reset_mid_gemm_then_bit_exact():
    """Garbage before a frame, then half a GEMM sent and a reset: the next GEMM is bit-exact."""
    case = _case(6)

    def host(transport):
        link = BoardLink(transport, CFG)
        transport.write(b"\x5a\xa5\xa5\x00garbage\xff" * 3)
        for name, payload in program_packets(case.program)[:9]:      # command, weights, some activations
            link._send(name, payload)
        link.reset()
        return link.run(case.program)

    assert np.array_equal(run_with_host(_top(), host), case.expected)


@pytest.mark.parametrize("stuck, shape, seed", [("cmd", (2, 3, 2), 8), ("act", (40, 2, 2), 9)], ids=["busy", "stalled"])
def test_reset_while_a_frame_waits_for_its_stream(stuck, shape, seed):
    """A reset arrives while the board holds a frame for a stream that is not ready (a watcher sees
    ``offered`` naming that stream, and its ``ready`` low, in the reset's cycle); the next GEMM is
    bit-exact, each result exactly once, with no recovery. ``cmd``: a second command while a GEMM
    (2x3x2, seed 8) waits for its last activation (the accelerator busy). ``act``: a GEMM of 40 rows
    (40x2x2, seed 9) with the board's transmitter held (the output consumer stalled), its activations
    sent one frame at a time until one waits (the results fill the output path), then the reset right
    behind it (the link parses its bytes in order); the transmitter is released at the reset.
    The next GEMM has another shape (4x3x3, seed 10)."""
    first = make_case(CFG, *shape, mode="single", seed=seed)
    after = make_case(CFG, 4, 3, 3, mode="tflite", seed=10)
    top, box = _top(), []
    resets, now = [], {}            # at each link reset: (stream offered or None, its ready); the last cycle's

    async def watch(ctx):
        readies = [getattr(top.accel, name).ready for name in ACCEL_STREAMS]
        async for _clk, _rst, reset, offered, *ready in ctx.tick().sample(top.link.soft_reset, top.offered, *readies):
            i = offered.bit_length() - 1
            name = ACCEL_STREAMS[i] if offered else None
            now["offered"] = name
            if reset:
                resets.append((name, ready[i] if offered else None))
                if len(resets) > 1:                 # not BoardLink's opening reset: the consumer resumes
                    box[0].tx_hold = False

    def host(transport):
        link = BoardLink(transport, CFG)
        packets = program_packets(first.program)
        if stuck == "cmd":
            for name, payload in packets[:-1]:          # the GEMM waits for its last activation
                link._send(name, payload)
            link._send("cmd", packets[0][1])            # a command for the busy accelerator
            while link._unacked:                        # every frame acked: the command is at the boundary
                link._pump()
        else:
            transport.tx_hold = True
            link.window = 1 << 20                   # the acks are held too: send without waiting for them
            for name, payload in packets:
                link._send(name, payload)
                transport.sleep(10 * transport.divisor * (OVERHEAD + len(payload) + 2))     # sent, and decoded
                if now["offered"] == name:          # a frame not taken within two byte times: it waits
                    break
            assert name == "act" and now["offered"] == "act", "the output path never filled"
        link.reset()
        return link.recovered, link.run(after.program)

    recovered, y = run_with_host(top, host, transport_out=box, processes=[watch])
    assert resets[1:] == [(stuck, 0)], resets
    assert recovered == 0 and np.array_equal(y, after.expected)


def test_stalled_output_consumer_loses_nothing():
    """The board's transmitter held 70 % of the time: results queue up, the link back-pressures the
    accelerator, and every result arrives once."""
    case = make_case(CFG, 5, 2, 4, mode="single", seed=7)
    y = run_with_host(_top(), lambda t: BoardLink(t, CFG).run(case.program), stall=(1400, 2000))
    assert np.array_equal(y, case.expected)


def test_board_link_detects_wrong_bitstream():
    other = ArrayConfig(rows=2, cols=2, max_k=32, acc_depth=8, rounding=("single", "tflite"))
    with pytest.raises(LinkError, match=r"^sim: board was built for max_k=16, the manifest says 32 "
                                        r"\(bitstream built from another manifest\?\)$"):
        run_with_host(_top(), lambda t: BoardLink(t, other))


def test_board_reports_unknown_opcode_and_rejected_command():
    def host(transport):
        link = BoardLink(transport, CFG)
        transport.write(encode(0x77, 0))
        replies = [link._frame() for _ in range(1)]
        # An all-zero command (M = 0) is accepted by the link and rejected by the accelerator.
        link._send("cmd", bytes(packet_bytes(CFG)["cmd"]))
        with pytest.raises(LinkError, match=r"^sim: board reports rejected: the accelerator rejected"):
            while True:
                link._pump()
        return replies

    replies = run_with_host(_top(), host)
    assert replies == [(REPLIES["error"], 1, bytes([ERRORS["unknown_opcode"], 0x77]))]


def test_silent_board_is_one_line():
    """Nothing answers (no board top behind the port): one LinkError line after the retries, no hang."""

    class Silent:
        name = "/dev/ttyUSB9"

        def write(self, data):
            pass

        def read(self, n):
            return b""

    with pytest.raises(LinkError, match=r"^/dev/ttyUSB9: no answer from the board after 3 reset frames"):
        BoardLink(Silent(), CFG, retries=2)


@pytest.mark.parametrize("board", ["refusing", "resultless"])
def test_board_that_never_does_the_work_is_one_line(board):
    """A board that answers reset and info but then either refuses every frame with an error (as a
    board top whose stream never takes its frame, once its FIFO overflows) or acks every frame and
    never sends a result: the GEMM stops with one line naming what it waited for, instead of resending
    forever (each error frame is an answer, so counting silent timeouts alone never ended)."""

    class Board:
        name = "/dev/ttyUSB9"

        def __init__(self):
            self.replies = bytearray()
            self.writes = 0

        def write(self, data):
            self.writes += 1
            assert self.writes < 1000, "the host resends forever"
            while data:             # whole frames, as the host writes them
                op, seq, n = data[2], data[3], data[4] | data[5] << 8
                data = data[OVERHEAD + n:]
                if op == OPCODES["reset"]:
                    self.replies += encode(REPLIES["reset_done"], seq + 1)
                elif op == OPCODES["info"]:
                    self.replies += encode(REPLIES["info"], seq, board_info_bytes(CFG))
                elif board == "refusing":
                    self.replies += encode(REPLIES["error"], 1, bytes([ERRORS["rx_overflow"], 0]))
                else:
                    self.replies += encode(REPLIES["ack"], seq + 1)

        def read(self, n):
            out = bytes(self.replies[:n])
            del self.replies[:n]
            return out

    message = {"refusing": r"no progress in \d+\.\d s, 9 failures in a row \(last: reply timeout\) while waiting "
                           r"for the ack of frame seq 1 \(23 frames unacknowledged\) \(\d+ replies changed nothing\)",
               "resultless": r"a GEMM failed 9 times in a row in \d+\.\d s \(last: no result 0 in a reply timeout, "
                             r"every frame acknowledged\) \(link too noisy\?\)"}[board]
    with pytest.raises(LinkError, match=rf"^/dev/ttyUSB9: {message}$"):
        BoardLink(Board(), CFG).run(_case(1).program)


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


@pytest.mark.parametrize("depth, seed", [(4, 1), (4, 2), (16, 3), (256, 4)])
def test_receive_fifo_equals_sync_fifo_buffered(depth, seed):
    """The link's receive FIFO (flags kept as registers) against Amaranth's ``SyncFIFOBuffered`` under
    the same random writes and reads: every output equal in every cycle, through full and empty."""
    import random
    ours, ref = ReceiveFifo(width=8, depth=depth), SyncFIFOBuffered(width=8, depth=depth)
    m = Module()
    m.submodules.ours, m.submodules.ref = ours, ref
    rng = random.Random(seed)
    seen = set()

    async def bench(ctx):
        for t in range(4000):
            phase = (t // (4 * depth)) % 2          # write-heavy (fills), then read-heavy (drains)
            w_en, r_en = rng.random() < (0.8 if phase == 0 else 0.2), rng.random() < (0.2 if phase == 0 else 0.8)
            for fifo in (ours, ref):
                ctx.set(fifo.w_en, w_en)
                ctx.set(fifo.r_en, r_en)
                ctx.set(fifo.w_data, t & 0xFF)
            for name in ("w_rdy", "r_rdy", "level"):
                assert ctx.get(getattr(ours, name)) == ctx.get(getattr(ref, name)), (t, name)
            if ctx.get(ref.r_rdy):
                assert ctx.get(ours.r_data) == ctx.get(ref.r_data), (t, "r_data")
            seen.add(ctx.get(ref.level))
            await ctx.tick()
        assert {0, depth} <= seen

    run_sim(m, bench)


@pytest.mark.parametrize("gap", [None, 0, 3])     # None: each frame offered the cycle after the last is taken
def test_link_control_sequence_acks_and_naks(gap):
    """Sequence handling alone: an in-order frame is passed on and acked, a duplicate (behind) acked
    again and not passed on, the first frame ahead answered with one out-of-sequence error (detail:
    its seq) and the next ahead frames not at all, until an in-order frame; a reset clears that, so
    the next frame ahead is answered again."""
    dut = LinkControl(max_payload=4, result_bytes=2, info=b"\x01\x02", data_bytes=2)
    act, reset = OPCODES["act"], OPCODES["reset"]
    frames = [(act, 0), (act, 0), (act, 2), (act, 3), (act, 1), (act, 5), (act, 6), (reset, 9), (act, 12),
              (act, 10), (act, 10)]
    replies, passed = [], []

    async def feed(ctx):
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.data.ready, 1)
        for op, seq in frames:
            ctx.set(dut.rx.payload, {"op": op, "seq": seq, "len": 0, "payload": 0})
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
            if gap is not None:
                ctx.set(dut.rx.valid, 0)
                await ctx.tick().repeat(gap + 6)      # the replies leave (one every other cycle)
        ctx.set(dut.rx.valid, 0)
        await ctx.tick().repeat(10)

    async def watch(ctx):
        async for _clk, _rst, tv, tp, dv, dp in ctx.tick().sample(dut.tx.valid, dut.tx.payload, dut.data.valid,
                                                                  dut.data.payload):
            if tv:
                code = tp.payload & 0xFF if tp.op == REPLIES["error"] else None
                detail = (tp.payload >> 8) & 0xFF if code is not None else None
                replies.append((tp.op, code, detail))
            if dv:
                passed.append(dp.seq)

    run_sim(dut, feed, processes=[watch])
    ack, err, done = REPLIES["ack"], REPLIES["error"], REPLIES["reset_done"]
    oos = ERRORS["out_of_sequence"]
    assert passed == [0, 1, 10]
    assert [r for r in replies if r[0] == err] == [(err, oos, 2), (err, oos, 5), (err, oos, 12)]
    if gap is not None:     # (back to back, pending acks merge)
        assert replies == [(ack, None, None), (ack, None, None), (err, oos, 2), (ack, None, None), (err, oos, 5),
                           (done, None, None), (err, oos, 12), (ack, None, None), (ack, None, None)]
