"""The host link's framing, shared by the gateware (``qhw.fpga.link``) and the host (``qhw.fpga.host``).

Pure Python (no Amaranth): the one definition of the frame format, the CRC, the opcodes, the
error codes and the info frame. Both directions use the same frame::

    0xA5 0x5A | op | seq | len (u16 LE) | payload (len bytes) | CRC-16/CCITT-FALSE (u16 BE)

The CRC (poly 0x1021, init 0xFFFF, no reflection, no final xor) covers ``op`` to the end of the
payload; sent most significant byte first, so running it over the CRC too leaves 0.

Host to board (``OPCODES``): ``cmd``/``params``/``weights``/``act`` carry one beat of that
accelerator stream (payload little-endian, the layout's bits zero-padded to whole bytes; the GEMM
board top, ``ACCEL_STREAMS``); ``load``/``input`` carry 1 to ``frame_bytes / unit`` model-load words
(4 bytes each) or input beats (``rows`` bytes each) of the network engine (the network board top,
``ENGINE_STREAMS``): their length is any whole number of units up to the info frame's
``frame_bytes``, so the last frame of a stream is short, never padded (padding words would be read
by the engine as the next load or the next image). All of them are *sequenced*: the board executes
a frame only if its ``seq`` is the next expected one (mod 256).
``reset`` and ``info`` are not sequenced: ``reset`` returns the payload hardware to idle and makes
``seq + 1`` the next expected number; ``info`` asks for the info frame.

Board to host (``REPLIES``): ``ack`` (seq = next expected: every frame before it was accepted;
cumulative, so lost acks heal), ``result`` (seq = result count since reset, mod 256; payload one
``out`` beat; for the network engine ``rows`` output bytes then a byte whose bit 0 is ``last``),
``info`` (seq = next expected; ``INFO_LAYOUT``, ``PROTOCOL_VERSION``), ``reset_done`` (seq = next
expected), ``error`` (seq = next expected; payload ``[code, detail]``, ``ERRORS``).
"""

from __future__ import annotations

from ..arith import ROUNDING_MODES
from ..contract import MANIFEST_FORMAT_VERSION, PE_KINDS, REQUANT_MULS
from ..engine.config import ENGINE_SIZES, OPTIONAL_UNITS, POOL_AVG, WEIGHT_RAMS

__all__ = ["ACCEL_STREAMS", "ENGINE_FIELDS", "ENGINE_OPTIONS", "ENGINE_STREAMS", "ERRORS", "ERROR_TEXT", "FATAL_ERRORS",
           "HEADER_BYTES", "INFO_BYTES", "INFO_LAYOUT", "OPCODES", "OVERHEAD", "PROTOCOL_VERSION", "REPLIES",
           "SEQUENCED", "SYNC", "TOPS", "crc16", "crc16_byte", "encode", "info_bytes", "parse_info"]

# 4: the info frame adds the engine's built units, pool-average rule and weight RAM (39 bytes; 3: 36)
PROTOCOL_VERSION = 4
SYNC = (0xA5, 0x5A)
HEADER_BYTES = 6                # sync, sync, op, seq, len lo, len hi
OVERHEAD = HEADER_BYTES + 2     # + CRC

OPCODES = {"cmd": ord("C"), "params": ord("P"), "weights": ord("W"), "act": ord("A"),
           "load": ord("L"), "input": ord("D"), "reset": ord("Z"), "info": ord("I")}
ACCEL_STREAMS = ("cmd", "params", "weights", "act")     # the GEMM board top's frames
ENGINE_STREAMS = ("load", "input")                      # the network board top's frames
SEQUENCED = ACCEL_STREAMS + ENGINE_STREAMS
TOPS = ("accel", "network")                             # the info frame's ``top`` byte
REPLIES = {"ack": ord("K"), "result": ord("R"), "info": ord("I"), "reset_done": ord("z"), "error": ord("E")}

# Error frame codes (payload byte 0); byte 1 is the detail named in ERROR_TEXT.
ERRORS = {"bad_crc": 1, "bad_length": 2, "unknown_opcode": 3, "out_of_sequence": 4, "rx_framing": 5,
          "rx_overflow": 6, "timeout": 7, "rejected": 8, "not_ready": 9}
ERROR_TEXT = {
    "bad_crc": "a frame failed its CRC (detail: its opcode byte as received)",
    "bad_length": "a frame's length is not its opcode's (detail: opcode)",
    "unknown_opcode": "a frame with a valid CRC has an unknown opcode (detail: opcode)",
    "out_of_sequence": "a frame was skipped (detail: the seq received; the error's seq is the expected one)",
    "rx_framing": "the UART saw a bad stop bit (baud rate mismatch or line noise)",
    "rx_overflow": "a byte arrived with the receive FIFO full and was dropped",
    "timeout": "a partial frame was abandoned (no byte for the frame timeout)",
    "rejected": "the accelerator rejected a command (its error flag: M, K, N or mode outside the build), or the "
                "network engine raised its error (a model load it refused)",
    "not_ready": "input arrived with no model loaded (load the model first)",
}
# Errors the host cannot fix by resending: the run stops with one line.
FATAL_ERRORS = ("rejected", "not_ready")

# The info frame: (field, bytes), little-endian. Every parameter the host needs to refuse a model
# the bitstream cannot run, and the link's own sizes. ``top`` indexes TOPS; the engine sizes
# (``qhw.engine.config.ENGINE_SIZES``), ``frame_bytes`` (the most payload bytes of a ``load`` or
# ``input`` frame) and the engine options (``ENGINE_OPTIONS``: ``units`` a mask over OPTIONAL_UNITS,
# ``pool_avg`` and ``weight_ram`` indices into POOL_AVG and WEIGHT_RAMS) are 0 on the GEMM board top.
# The engine's latencies are not sent: they follow from these fields and ``format_version``.
ENGINE_FIELDS = ENGINE_SIZES
UNITS = tuple(OPTIONAL_UNITS)      # bit i of the info frame's ``units``
ENGINE_OPTIONS = {"units": UNITS, "pool_avg": POOL_AVG, "weight_ram": WEIGHT_RAMS}
INFO_LAYOUT = (("magic", 3), ("protocol", 1), ("format_version", 1), ("rows", 1), ("cols", 1),
               ("act_bits", 1), ("act_signed", 1), ("weight_bits", 1), ("per_channel", 1), ("rounding", 1),
               ("max_k", 2), ("acc_bits", 1), ("acc_depth", 2), ("tile_rows", 1), ("tile_cols", 1),
               ("tile_pipeline", 1), ("requant_lanes", 1), ("pe", 1), ("fifo_depth", 2),
               ("top", 1), ("weight_kib", 2), ("act_kib", 2), ("program_words", 2), ("pool_line", 2),
               ("tables", 1), ("frame_bytes", 2), ("units", 1), ("pool_avg", 1), ("weight_ram", 1))
INFO_BYTES = sum(n for _, n in INFO_LAYOUT)
MAGIC = b"QHW"


def crc16_byte(crc: int, byte: int) -> int:
    """One byte into CRC-16/CCITT-FALSE (MSB first)."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for b in data:
        crc = crc16_byte(crc, b)
    return crc


def encode(op: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame."""
    body = bytes([op, seq & 0xFF, len(payload) & 0xFF, len(payload) >> 8]) + payload
    return bytes(SYNC) + body + crc16(body).to_bytes(2, "big")


def info_bytes(parameters: dict, *, fifo_depth: int, engine: dict | None = None, frame_bytes: int = 0) -> bytes:
    """The info payload for an array's manifest ``parameters`` (``ArrayConfig.to_manifest()``); for
    the network board top also its ``engine`` (the manifest's ``engine`` section: the sizes,
    ``ENGINE_FIELDS``, and ``units``, ``pool_avg``, ``weight_ram``) and ``frame_bytes``."""
    p = parameters
    eng = dict.fromkeys((*ENGINE_FIELDS, *ENGINE_OPTIONS), 0)
    if engine:
        eng.update({k: engine[k] for k in ENGINE_FIELDS},
                   units=sum(1 << UNITS.index(u) for u in engine["units"]),
                   pool_avg=POOL_AVG.index(engine["pool_avg"]), weight_ram=WEIGHT_RAMS.index(engine["weight_ram"]))
    values = {"magic": int.from_bytes(MAGIC, "little"), "protocol": PROTOCOL_VERSION,
              "format_version": MANIFEST_FORMAT_VERSION, "rows": p["rows"], "cols": p["cols"],
              "act_bits": p["act_bits"], "act_signed": int(p["act_signed"]), "weight_bits": p["weight_bits"],
              "per_channel": int(p["per_channel"]),
              "rounding": sum(1 << ROUNDING_MODES.index(r) for r in p["rounding"]),
              "max_k": p["max_k"], "acc_bits": p["acc_bits"], "acc_depth": p["acc_depth"],
              "tile_rows": p["tile_rows"], "tile_cols": p["tile_cols"], "tile_pipeline": p["tile_pipeline"],
              "requant_lanes": p["requant_lanes"] or 0, "fifo_depth": fifo_depth,
              # The pe byte: the PE kind's index, the lanes' multiply (REQUANT_MULS) in the high nibble.
              "pe": PE_KINDS.index(p["pe"]) | REQUANT_MULS.index(p["requant_mul"]) << 4,
              "top": TOPS.index("network" if engine else "accel"), "frame_bytes": frame_bytes,
              **eng}
    out = b""
    for name, n in INFO_LAYOUT:
        if not 0 <= values[name] < 1 << (8 * n):
            raise ValueError(f"info frame field {name} holds {n} byte(s), not {values[name]}")
        out += int(values[name]).to_bytes(n, "little")
    return out


def parse_info(data: bytes) -> dict:
    """The info payload back to manifest ``parameters`` (plus ``protocol``, ``format_version``,
    ``fifo_depth``, ``top``, ``engine``: the manifest's engine sizes, ``weight_ram``, ``pool_avg`` and
    ``units`` (a list), or None, ``frame_bytes``); ``ValueError``
    if it is not one. A board of another protocol version gives only ``protocol`` (the layout may differ)."""
    if len(data) < 4 or data[:3] != MAGIC:
        raise ValueError("not a qhw info frame")
    if data[3] != PROTOCOL_VERSION:
        return {"protocol": data[3]}
    if len(data) != INFO_BYTES:
        raise ValueError("not a qhw info frame")
    v, pos = {}, 0
    for name, n in INFO_LAYOUT:
        v[name] = int.from_bytes(data[pos:pos + n], "little")
        pos += n
    if v["pe"] & 0xF >= len(PE_KINDS) or v["pe"] >> 4 >= len(REQUANT_MULS):
        raise ValueError(f"unknown pe code {v['pe']}")
    if v["top"] >= len(TOPS):
        raise ValueError(f"unknown top code {v['top']}")
    for name, choices in ENGINE_OPTIONS.items():
        limit = 1 << len(choices) if name == "units" else len(choices)
        if v[name] >= limit:
            raise ValueError(f"unknown {name} code {v[name]}")
    top = TOPS[v["top"]]
    engine = {**{k: v[k] for k in ENGINE_FIELDS}, "weight_ram": WEIGHT_RAMS[v["weight_ram"]],
              "pool_avg": POOL_AVG[v["pool_avg"]],
              "units": [u for i, u in enumerate(UNITS) if v["units"] >> i & 1]}
    return {"protocol": v["protocol"], "format_version": v["format_version"], "fifo_depth": v["fifo_depth"],
            "top": top, "engine": engine if top == "network" else None,
            "frame_bytes": v["frame_bytes"],
            "parameters": {
                "rows": v["rows"], "cols": v["cols"], "act_bits": v["act_bits"], "act_signed": bool(v["act_signed"]),
                "weight_bits": v["weight_bits"], "max_k": v["max_k"], "acc_bits": v["acc_bits"],
                "acc_depth": v["acc_depth"], "per_channel": bool(v["per_channel"]),
                "rounding": [r for i, r in enumerate(ROUNDING_MODES) if v["rounding"] >> i & 1],
                "tile_rows": v["tile_rows"], "tile_cols": v["tile_cols"], "tile_pipeline": v["tile_pipeline"],
                "requant_lanes": v["requant_lanes"] or None, "pe": PE_KINDS[v["pe"] & 0xF],
                "requant_mul": REQUANT_MULS[v["pe"] >> 4]}}
