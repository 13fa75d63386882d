"""The network board top (the engine behind the host link) with the host driver: a small Dense model
(seed 11) on a 4x4 engine, bit-exact against the golden model, with faults on the link (seeds
stated). The engine simulates at a few hundred cycles per second in Amaranth, so most tests use the
byte-level link (``uart=False``, one byte a cycle: the same parser, control and sender); one runs
the whole top, UART included, with the model embedded (~5,000 cycles)."""

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from amaranth_sim import run_sim
from onnx import TensorProto, helper, numpy_helper

from qhw.api import quantize_model
from qhw.cli import main
from qhw.engine.compiler import compile_model, units_used
from qhw.engine.config import EngineConfig
from qhw.executor import run_batched
from qhw.fpga.engine_host import EngineSession, frames, infer
from qhw.fpga.host import BoardLink, LinkError, config_from_info
from qhw.fpga.network_top import FrameUnpacker, NetworkBoardTop
from qhw.fpga.payload import network_info_bytes
from qhw.fpga.protocol import ERRORS, OPCODES, OVERHEAD, PROTOCOL_VERSION, REPLIES, encode, parse_info
from qhw.fpga.simlink import Faults, run_with_host
from qhw.hw.generate import network_manifest
from qhw.qmodel import save_qmodel
from qhw.quantize import QuantConfig
from qhw.runtime import config_for_model

SEED = 11
REPLY = 400             # host reply timeout (cycles) on the byte-level link: an inference takes ~100


def make_tiny(d):
    """An 8 -> 4 -> 4 Dense model (seed 11) written in ``d``, 5 inputs, a 4x4 engine that holds it
    and its compiled program."""
    rng = np.random.default_rng(SEED)
    f = np.float32
    inits = {"w1": rng.normal(0, 0.5, (4, 8)).astype(f), "b1": rng.normal(0, 0.1, 4).astype(f),
             "w2": rng.normal(0, 0.5, (4, 4)).astype(f), "b2": rng.normal(0, 0.1, 4).astype(f)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), d / "tiny.onnx")
    x = rng.normal(0, 1, (5, 8)).astype(f)
    qm = quantize_model(d / "tiny.onnx", QuantConfig(), calib_x=rng.normal(0, 1, (32, 8)).astype(f),
                        log=lambda *_: None)
    engine = EngineConfig(array=config_for_model(qm.graph, rows=4, cols=4), weight_kib=1, act_kib=1,
                          program_words=128)
    program = compile_model(qm, engine).program
    return d, qm, x, engine, program


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("netboard"))


def _top(engine, **kw):
    return NetworkBoardTop(engine=engine, divisor=4, uart=False, **kw)


def make_add(d, engine):
    """x (8) -> two Dense layers of 4 -> Add (seed 11), compiled for ``engine``: a program that needs
    the AddUnit."""
    rng = np.random.default_rng(SEED)
    f = np.float32
    inits = {f"{k}{i}": rng.normal(0, 0.5, shape).astype(f) for i in (1, 2) for k, shape in (("w", (4, 8)), ("b", 4))}
    nodes = [helper.make_node("Gemm", ["x", f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}", transB=1) for i in (1, 2)]
    nodes.append(helper.make_node("Add", ["h1", "h2"], ["y"], name="add"))
    g = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), d / "add.onnx")
    qm = quantize_model(d / "add.onnx", QuantConfig(), calib_x=rng.normal(0, 1, (32, 8)).astype(f),
                        log=lambda *_: None)
    return compile_model(qm, engine).program


def test_info_frame_carries_the_engine(tiny):
    """Every field of the manifest's engine section that decides whether a model runs: the sizes, the
    units built, the pool-average rule and the weight RAM (a mutant that drops one fails here)."""
    *_, engine, _ = tiny
    info = parse_info(network_info_bytes(engine, 64))
    assert info["protocol"] == PROTOCOL_VERSION == 4 and info["top"] == "network" and info["frame_bytes"] == 64
    assert info["engine"] == {"weight_kib": 1, "act_kib": 1, "program_words": 128, "pool_line": 64, "tables": 1,
                              "weight_ram": "block", "pool_avg": "lane", "units": ["add", "pool"]}
    assert info["parameters"] == engine.array.to_manifest()["parameters"]
    for units in ((), ("add",), ("pool",)):
        other = replace(engine, units=units, pool_avg="div", weight_ram="spram")
        assert config_from_info(parse_info(network_info_bytes(other, 64))).to_manifest() == other.to_manifest()
    assert [len(p) for p in frames([bytes(4)] * 37, 64)] == [64, 64, 20]     # the last frame short, not padded


@pytest.mark.parametrize("seed", [2])
def test_faults_then_bit_exact(tiny, seed):
    """Flips, drops, duplicates and inserts in both directions at 1 % of bytes (seed 2), through the
    load (16 words a frame, the last frame short) and 3 inferences: every result bit-exact, each
    exactly once."""
    _, qm, x, engine, program = tiny
    faults = Faults(0.01, seed)

    def host(t):
        link = BoardLink(t, engine)
        s = EngineSession(link, program)
        s.load(wait=False)                  # the first image's frames right behind the load's
        return link.recovered, infer(s, qm.graph, x[:3])

    recovered, y = run_with_host(_top(engine), host, faults=faults, timeout_cycles=REPLY)
    assert faults.count > 0 and recovered > 0
    assert np.array_equal(y, run_batched(qm.graph, x[:3], integer=True))


def test_garbage_reset_mid_inference_and_stalled_consumer(tiny):
    """Garbage before a frame; a reset after half an image (the model survives it: no reload); the
    board's transmitter held 70 % of the time: the next inferences are bit-exact."""
    _, qm, x, engine, program = tiny

    def host(t):
        link = BoardLink(t, engine)
        s = EngineSession(link, program)
        s.load()
        first = infer(s, qm.graph, x[:1])
        t.write(b"\x5a\xa5\xa5\x00garbage\xff" * 3)
        link._send("input", bytes(range(4)))         # one beat of the two the image needs
        link.reset()
        return s.loads, first, infer(s, qm.graph, x[1:3])

    loads, first, rest = run_with_host(_top(engine), host, timeout_cycles=4 * REPLY, stall=(140, 200))
    assert loads == 1
    assert np.array_equal(np.concatenate([first, rest]), run_batched(qm.graph, x[:3], integer=True))


def test_input_without_model_is_not_ready(tiny):
    *_, engine, program = tiny

    def host(t):
        link = BoardLink(t, engine)
        link._send("input", bytes(8))
        while True:
            link._pump()

    with pytest.raises(LinkError, match=r"^sim: board reports not_ready: input arrived with no model loaded"):
        run_with_host(_top(engine), host, timeout_cycles=REPLY)


def test_units_and_pool_rule_refused_in_one_line(tiny, tmp_path):
    """A board built ``--units none --pool-avg div``: a manifest with the units is refused as another
    bitstream's, and a program that needs the AddUnit is refused from the board's own info frame (no
    manifest, as on a real port) before any load frame is sent (the host sent only reset and info)."""
    *_, engine, _ = tiny
    bare = replace(engine, units=(), pool_avg="div")
    program = make_add(tmp_path, engine)
    assert units_used(program) == ("add",)
    with pytest.raises(LinkError, match=r"^sim: board was built for units='none', the manifest says 'add,pool' "
                                        r"\(bitstream built from another manifest\?\)$"):
        run_with_host(_top(bare), lambda t: BoardLink(t, replace(bare, units=("add", "pool"))), timeout_cycles=REPLY)

    def host(t):
        link = BoardLink(t, None)
        assert link.config.to_manifest() == bare.to_manifest()
        try:
            EngineSession(link, program)
        except LinkError as e:
            return str(e), t.bytes_out
    message, sent = run_with_host(_top(bare), host, timeout_cycles=REPLY)
    assert message == ("sim: the board's engine: descriptor 3 needs the engine's add unit (ADD), but it was generated "
                       "with --units none (regenerate with --units add)")
    assert sent == 2 * OVERHEAD


def test_program_checked_against_the_engine(tiny):
    """``check_program`` (what ``EngineSession`` runs against the board's info frame): the tiny model's
    program fits its engine, and each smaller memory or other shape is one line naming it."""
    from qhw.engine.compiler import check_program
    from qhw.errors import ConfigError
    *_, engine, program = tiny
    check_program(program, engine)
    words = program.words
    for other, message in ((replace(engine, program_words=words - 16),
                            rf"needs {words} program store words, the engine has {words - 16}$"),
                           (replace(engine, array=replace(engine.array, rows=8, cols=8)), r"is for a 4x4 array"),
                           (replace(engine, array=replace(engine.array, rounding=("tflite",))),
                            r"uses rounding single, the engine has tflite$")):
        with pytest.raises(ConfigError, match=rf"^program: the program {message}"):
            check_program(program, other)


def test_board_of_another_protocol_refused_in_one_line(tiny):
    """A protocol-3 board (its 36-byte info frame: no units) is refused with the version, not misread."""
    *_, engine, _ = tiny

    class OldBoard:                       # answers reset and info frames as a protocol-3 bitstream did
        name = "/dev/ttyUSB1"

        def __init__(self):
            self.out = b""

        def write(self, data):
            op, seq = data[2], data[3]
            if op == OPCODES["reset"]:
                self.out += encode(REPLIES["reset_done"], seq + 1)
            else:
                self.out += encode(REPLIES["info"], seq, b"QHW" + bytes([3]) + bytes(32))

        def read(self, n):
            got, self.out = self.out[:n], self.out[n:]
            return got
    with pytest.raises(LinkError, match=r"^/dev/ttyUSB1: board speaks link protocol 3, this qhw 4 \(rebuild the "
                                        r"bitstream with this qhw\)$"):
        BoardLink(OldBoard(), engine)


def test_mismatched_engine_refused_in_one_line(tiny):
    *_, engine, _ = tiny
    other = EngineConfig(array=engine.array, weight_kib=2, act_kib=1, program_words=128)
    with pytest.raises(LinkError, match=r"^sim: board was built for weight_kib=1, the manifest says 2 "
                                        r"\(bitstream built from another manifest\?\)$"):
        run_with_host(_top(engine), lambda t: BoardLink(t, other), timeout_cycles=REPLY)
    with pytest.raises(LinkError, match=r"^sim: board runs the network board top, the manifest describes "
                                        r"the accel top"):
        run_with_host(_top(engine), lambda t: BoardLink(t, engine.array), timeout_cycles=REPLY)


def test_uart_top_with_embedded_model(tiny):
    """The whole top, UART included (divisor 4), the program embedded: a frame of an accelerator
    opcode answered ``unknown_opcode``, then an inference bit-exact."""
    _, qm, x, engine, program = tiny

    def host(t):
        link = BoardLink(t, engine)
        t.write(encode(OPCODES["cmd"], 0, bytes(4)))
        reply = link._frame()
        return reply, infer(EngineSession(link, program), qm.graph, x[:1])

    reply, y = run_with_host(NetworkBoardTop(engine=engine, divisor=4, image=program.to_bytes()), host)
    assert reply == (REPLIES["error"], 1, bytes([ERRORS["unknown_opcode"], OPCODES["cmd"]]))
    assert np.array_equal(y, run_batched(qm.graph, x[:1], integer=True))


def test_board_cli_network_sim(tiny, tmp_path, capsys):
    """``qhw board run`` with a --top network manifest: same JSON keys, bit-exact; a model too large
    for the engine's memories refused in one line before the link."""
    d, qm, x, engine, _ = tiny
    save_qmodel(qm, d / "tiny.qhw")
    np.savez(d / "data.npz", x=x[:1], y=np.array([0]))

    def manifest(e, name):                   # the manifest qhw generate --top network writes (no Verilog needed)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(network_manifest(e, name=name)))
        return str(path)
    argv = ["board", "run", str(d / "tiny.qhw"), "--port", "sim", "--rtl", manifest(engine, "net"), "--data",
            str(d / "data.npz"), "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bit_exact"] is True and rep["mismatches"] == 0 and rep["samples"] == 1 and rep["top"] == "network"
    assert rep["inferences_per_s"] > 0 and rep["link_errors_recovered"] == 0 and rep["model_loads"] == 1
    small = EngineConfig(array=engine.array, weight_kib=1, act_kib=1, program_words=32)
    argv[6] = manifest(small, "small")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qhw: error: ") and "program" in err[0]


@pytest.mark.parametrize("loaded_after", [6, None])
def test_unpacker_holds_input_until_the_load_settles(loaded_after):
    """A load frame and an input frame back to back: the input waits for ``loaded`` (raised here
    ``loaded_after`` cycles after the last load word, the most the LoadUnit takes) and is not
    refused (``LOAD_SETTLE`` below 5 fails here); with no model loaded it is dropped with one
    ``not_ready``."""
    dut = FrameUnpacker(rows=4, max_payload=16)
    sent = [(OPCODES["load"], bytes(range(8))), (OPCODES["input"], bytes(range(16, 24)))]
    log = {"load": [], "i": [], "not_ready": [], "loaded_at": None}

    async def source(ctx):
        for op, payload in sent:
            ctx.set(dut.frame.payload.op, op)
            ctx.set(dut.frame.payload.len, len(payload))
            ctx.set(dut.frame.payload.payload, int.from_bytes(payload, "little"))
            ctx.set(dut.frame.valid, 1)
            await ctx.tick().until(dut.frame.ready)
        ctx.set(dut.frame.valid, 0)

    async def sink(ctx):
        ctx.set(dut.load.ready, 1)
        ctx.set(dut.i.ready, 1)
        for cycle in range(60):
            if log["load"] and loaded_after is not None and cycle == log["load"][-1][0] + loaded_after:
                ctx.set(dut.loaded, 1)
                log["loaded_at"] = cycle
            _, _, lv, lp, iv, ip, nr = await ctx.tick().sample(dut.load.valid, dut.load.payload, dut.i.valid,
                                                               dut.i.payload, dut.not_ready)
            if lv:
                log["load"].append((cycle, lp))
            if iv:
                log["i"].append((cycle, ip))
            if nr:
                log["not_ready"].append(cycle)

    run_sim(dut, source, sink)
    assert [w for _, w in log["load"]] == [0x03020100, 0x07060504]
    if loaded_after is None:
        assert log["i"] == [] and len(log["not_ready"]) == 1
    else:
        assert log["not_ready"] == [] and [b for _, b in log["i"]] == [0x13121110, 0x17161514]
        assert log["i"][0][0] >= log["loaded_at"]


def test_synth_board_top_of_a_network_manifest(tiny, tmp_path):
    """``qhw synth --top board`` reads a network manifest as its engine and builds the network board
    top (at the ULX3S's 25 MHz and 115200 baud: 217 cycles a bit); an accelerator manifest keeps the
    GEMM board top."""
    from qhw.fpga.board_run import board_config_from_manifest
    from qhw.fpga.board_top import BoardTop
    from qhw.fpga.flow import build_top
    *_, engine, _ = tiny
    path = tmp_path / "net.json"
    path.write_text(json.dumps(network_manifest(engine, name="net")))
    config, name = board_config_from_manifest(path)
    assert config == engine and name == "net"
    top = build_top(config, top="board", family="ecp5", clk_hz=25e6)
    gemm = build_top(engine.array, top="board", family="ecp5", clk_hz=25e6)
    for unused in (top, top.engine, top.link, gemm, gemm.accel, gemm.link):     # inspected, never elaborated
        unused._MustUse__silence = True
    assert isinstance(top, NetworkBoardTop) and top.divisor == 217 and top.engine.family == "ecp5"
    assert isinstance(gemm, BoardTop)


def test_frame_parser_takes_whole_units_up_to_the_largest():
    """An opcode with a unit (4) takes 4, 8 or 12 payload bytes; 0, 6 or 16 (past its largest) are
    ``bad_length``; an opcode without a unit keeps its one length."""
    from qhw.fpga.link import FrameParser
    from qhw.fpga.protocol import ERRORS as E
    load, act = OPCODES["load"], OPCODES["act"]
    dut = FrameParser(lengths={load: 12, act: 2}, timeout=200, max_payload=16, units={load: 4})
    cases = [(load, 4, True), (load, 0, False), (load, 6, False), (load, 12, True), (load, 16, False),
             (load, 8, True), (act, 2, True), (act, 4, False)]
    frames, errors = [], []

    async def feed(ctx):
        for seq, (op, n, _) in enumerate(cases):
            for b in encode(op, seq, bytes(range(1, n + 1))):
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(10)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        async for _clk, _rst, valid, f, ev, code in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.err_valid,
                                                                       dut.err_code):
            if valid:
                frames.append((f.seq, f.len))
            if ev:
                errors.append(code)

    run_sim(dut, feed, processes=[watch], deadline=1e-6 * 1500)
    assert frames == [(seq, n) for seq, (_, n, ok) in enumerate(cases) if ok]
    assert errors == [E["bad_length"]] * sum(1 for *_, ok in cases if not ok)
