"""qhw synth / qhw sweep with the real YoWASP tools: 2x2 placed and routed on both families.

The first YoWASP call of each tool compiles its WebAssembly (about a minute, cached in
~/.cache/YoWASP); later runs of a 2x2 take a few seconds each.
"""

import csv
import json

import pytest

from qhw.cli import main
from qhw.fpga.flow import SYNTH_KEYS
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import write


@pytest.fixture(scope="module")
def manifest_2x2(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl")
    cfg = ArrayConfig(rows=2, cols=2, max_k=64, acc_depth=16, rounding=("single",))
    _, j = write(cfg, name="qhw_2x2", out_dir=out)
    return j


@pytest.mark.parametrize("board, dsps, pe", [("icebreaker", 2, "ice40-dual"), ("ulx3s-85f", 4, "ecp5-pipelined")])
def test_synth_2x2_json_report(manifest_2x2, tmp_path, capsys, board, dsps, pe):
    assert main(["synth", "--rtl", str(manifest_2x2), "--board", board, "--json", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    r = json.loads(out[0])
    assert set(SYNTH_KEYS) <= set(r)
    assert r["board"] == board and r["pe"] == pe and r["macs"] == 4
    assert r["fmax_mhz"] > 0 and r["luts"] > 0 and r["ffs"] > 0
    assert r["dsps"] == dsps                        # dual 8x8: 2 MACs per SB_MAC16; ECP5: 1 per MULT18X18D
    assert r["dsp_use"] == {f"qhw/hw/pe_{'ice40' if board == 'icebreaker' else 'pipelined'}.py": dsps}
    assert r["peak_gops"] == pytest.approx(2 * 4 * r["fmax_mhz"] / 1000, abs=1e-3)
    assert r["critical_path"]["delay_ns"] > 0
    bit = tmp_path / r["bitstream"].rsplit("/", 1)[-1]
    data = bit.read_bytes()
    assert len(data) > 1000
    # A bitstream the packer wrote for this device: icepack's sync word after its 4-byte comment
    # frame; ecppack's comment header naming the part, then the ECP5 preamble.
    if board == "icebreaker":
        assert bit.suffix == ".bin" and data[4:8] == bytes.fromhex("7eaa997e")
    else:
        assert bit.suffix == ".bit" and data.startswith(b"\xff\x00Part: LFE5U-85F-6CABGA381\x00")
        assert bytes.fromhex("ffffbdb3") in data[:64]
    assert json.loads((tmp_path / "synth.json").read_text())["fmax_mhz"] == r["fmax_mhz"]
    # What qhw board flash would run for it (no board here: the command line only).
    assert main(["board", "flash", "--board", board, "--bitstream", str(bit), "--dry-run", "--json"]) == 0
    flash = json.loads(capsys.readouterr().out)
    assert flash["command"][1:] == ["-b", "ice40_generic" if board == "icebreaker" else "ulx3s", str(bit)]


def test_synth_board_top_icebreaker(tmp_path, capsys):
    """The UART board top builds and meets the 12 MHz oscillator on the UP5K. One column: a
    `single` requantization lane takes 5 of the UP5K's 8 SB_MAC16 (``dsp_use`` says where they
    went; the figure docs/fpga.md and boards/icebreaker/README.md quote)."""
    _, j = write(ArrayConfig(rows=2, cols=1, max_k=64, acc_depth=16, rounding=("single",)), name="qhw_2x1",
                 out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "icebreaker", "--top", "board", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["top"] == "board" and r["target_mhz"] == 12.0 and r["fmax_mhz"] >= 12.0
    assert r["dsp_use"] == {"qhw/hw/pe.py": 2, "qhw/hw/requant.py": 5} and r["dsps"] == 7
    assert r["brams"] >= 1                           # receive FIFO / accumulator memory


def test_synth_accel_shared_lane_ecp5(tmp_path, capsys):
    """The accelerator top with one requantization lane shared by two columns places and routes.
    Regression: ABC's name-based mapping tied `psum_out` bit 1 to bit 0 of the element alias
    `psum_out[1]` and nextpnr stopped with "multiply driven"; synthesis now checks the netlist."""
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=16, rounding=("single",), requant_lanes=1),
                 name="qhw_2x2_l1", out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-85f", "--top", "accel", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["top"] == "accel" and r["fmax_mhz"] > 0
    # Where the DSPs went: one per MAC, and one lane's multipliers (not one lane per column).
    # (A `single` lane's 33x31-bit multiply takes 4 MULT18X18D; a lane per
    # column would take 8.)
    assert r["dsp_use"] == {"qhw/hw/pe.py": 4, "qhw/hw/requant.py": 4} and r["dsps"] == 8


def test_synth_accel_ecp5_pipelined(tmp_path, capsys):
    """A manifest generated with --pe ecp5-pipelined: the accelerator top builds its PEs on the
    registered MULT18X18D (one per MAC, ``dsp_use`` names pe_pipelined.py) and routes."""
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=64, acc_depth=16, rounding=("single",), pe="ecp5-pipelined"),
                 name="qhw_2x2_p", out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-85f", "--top", "accel", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["top"] == "accel" and r["pe"] == "ecp5-pipelined" and r["fmax_mhz"] > 0
    # 4 MACs on 4 MULT18X18D; a `single` lane per column is 4 more each (as in the generic accel top).
    assert r["dsp_use"] == {"qhw/hw/pe_pipelined.py": 4, "qhw/hw/requant.py": 8} and r["dsps"] == 12


def test_synth_network_top_ecp5(tmp_path, capsys):
    """``--top network``: the network engine (small memories) with live stimulus places and routes;
    the report has the same keys as the other tops, and its memories are block RAM (not logic)."""
    from qhw.engine.config import EngineConfig
    from qhw.hw.generate import write_network
    engine = EngineConfig(array=ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=16, rounding=("single",)),
                          weight_kib=2, act_kib=1, program_words=256)
    _, j = write_network(engine, name="eng_4x4", out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-85f", "--top", "network", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(SYNTH_KEYS) <= set(r)
    assert r["top"] == "network" and r["macs"] == 16 and r["fmax_mhz"] > 0
    assert r["brams"] >= 2 and r["dsps"] >= 16
    # An accelerator manifest is not an engine: one line naming the manifest.
    _, a = write(ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=16), name="acc", out_dir=tmp_path / "a")
    assert main(["synth", "--rtl", str(a), "--board", "ulx3s-85f", "--top", "network"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qhw: error: {a}: --top network needs a manifest written by qhw generate --top network "
        f"(this one describes the GEMM accelerator: --top accel or board)")


@pytest.mark.parametrize("pe, argv, message", [
    ("generic", ["--board", "ulx3s-85f", "--top", "accel", "--pe", "ecp5-pipelined"],
     "--pe ecp5-pipelined does not match the manifest's pe generic; regenerate the RTL with "
     "qhw generate --pe ecp5-pipelined (or leave --pe out)"),
    ("ecp5-pipelined", ["--board", "ulx3s-85f", "--top", "board", "--pe", "generic"],
     "--pe generic does not match the manifest's pe ecp5-pipelined; regenerate the RTL with "
     "qhw generate --pe generic (or leave --pe out)"),
    ("ice40-dual", ["--board", "ulx3s-85f", "--top", "accel"],
     "the manifest's pe ice40-dual is for ice40 boards, not ulx3s-85f (ecp5); regenerate with "
     "qhw generate --pe ecp5-pipelined or --pe generic"),
    ("ecp5-pipelined", ["--board", "icebreaker", "--top", "board", "--pe", "ecp5-pipelined"],
     "the manifest's pe ecp5-pipelined is for ecp5 boards, not icebreaker (ice40); regenerate with "
     "qhw generate --pe ice40-dual or --pe generic"),
])
def test_synth_accel_pe_must_match_manifest(tmp_path, capsys, pe, argv, message):
    """The accel/board tops build the manifest's pe: --pe and the board family are checked against it
    before any tool runs (one line)."""
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",), pe=pe),
                 name="qhw_pe", out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), *argv, "-o", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == f"qhw: error: {message}"
    assert not (tmp_path / "b").exists()


def test_synth_does_not_fit_says_why(tmp_path, capsys):
    _, j = write(ArrayConfig(rows=6, cols=6, max_k=64, acc_depth=16, rounding=("single",)), name="qhw_6x6",
                 out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-12f", "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("qhw: error: 6x6 does not fit LFE5U-12F-6BG381C: MULT18X18D needs 36 of 28 (8 over")
    assert "should fit" in err
    assert not (tmp_path / "b" / "synth.json").exists()
    assert (tmp_path / "b" / "logs" / "place-and-route.log").exists()        # the tools' logs are kept


def test_synth_generic_asic_estimate(manifest_2x2, tmp_path, capsys):
    assert main(["synth", "--rtl", str(manifest_2x2), "--board", "generic", "--json", "-o", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["transistors"] > 1000 and r["transistors_complete"] and r["cells"] > 100 and r["ffs"] > 0


def test_synth_user_errors(tmp_path, capsys):
    assert main(["synth", "--rtl", str(tmp_path / "missing.json"), "--board", "icebreaker"]) == 2
    err = capsys.readouterr().err.strip()
    missing = tmp_path / "missing.json"
    assert err == f"qhw: error: {missing}: no such manifest (qhw generate writes NAME.json beside NAME.v)"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["synth", "--rtl", str(bad), "--board", "icebreaker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qhw: error: {bad}: not a qhw manifest (a JSON object expected, not list)"
    bad.write_text("{}")
    assert main(["synth", "--rtl", str(bad), "--board", "icebreaker"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"qhw: error: {bad}: field 'format_version' is missing")


def test_sweep_local_and_dask(tmp_path, capsys):
    from dask.distributed import Client, LocalCluster

    from qhw.fpga.sweep import sweep
    assert main(["sweep", "--board", "icebreaker", "--sizes", "2x2,2x4", "--jobs", "2", "-o",
                 str(tmp_path / "local")]) == 0
    rows = list(csv.DictReader((tmp_path / "local" / "sweep.csv").open()))
    assert [r["size"] for r in rows] == ["2x2", "2x4"] and all(r["fits"] == "True" for r in rows)
    assert [int(r["dsps"]) for r in rows] == [2, 4]
    assert (tmp_path / "local" / "sweep.png").stat().st_size > 1000
    assert (tmp_path / "local" / "sweep.md").read_text().startswith("| array |")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result = sweep(board="icebreaker", sizes=[(2, 2)], executor="dask", scheduler=client,
                       out_dir=tmp_path / "dask")
    assert result["rows"][0]["fits"] and result["rows"][0]["dsps"] == 2
    assert result["rows"][0]["fmax_mhz"] == pytest.approx(float(rows[0]["fmax_mhz"]))   # same seed, same result

