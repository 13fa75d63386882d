"""The network engine's instruction set: one fixed-size descriptor per layer, fields packed LSB first.

Every descriptor is ``DESCRIPTOR_WORDS`` 32-bit words (the program store's word is 32 bits). Word 0's
low byte is the opcode; the other fields of each opcode follow in the order of ``FIELDS[op]``, packed
LSB first across the words. This table is the only place the bit layout is written down: the encoder,
the decoder, the disassembler and ``docs/engine.md`` (generated from ``field_table``) all read it.
Signed fields are two's complement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError, ModelError

__all__ = ["DESCRIPTOR_WORDS", "FIELDS", "OPCODES", "OP_NAMES", "Descriptor", "field_table", "markdown_tables",
           "IN_STD", "IN_WINDOW", "POOL_NONE", "POOL_MAX", "POOL_AVG", "RULES", "RULE_CODES"]

DESCRIPTOR_WORDS = 16
DESCRIPTOR_BITS = DESCRIPTOR_WORDS * 32
OP_BITS = 8

# Input layouts a MATMUL reads (docs/engine.md, "Activation layouts").
IN_STD = 0       # channel-last, channels padded to whole words
IN_WINDOW = 1    # sliding window: word (y, j) holds padded pixels j*sw .. j*sw + G - 1 of row y
# Pooling kinds (fused into a MATMUL's write-back, or a POOL descriptor of its own).
POOL_NONE, POOL_MAX, POOL_AVG = 0, 1, 2
# Dependence fields (docs/engine.md, "Timing contract"): a tile reading plane p (``nt*cw_step + cwi``)
# starts once the inference's scratchpad write count reaches ``dep_base + p*dep_step``.
_DEP = [("dep_base", 24, False)]
# How an average becomes an output code (qhw.ops._average_i's cases, in order).
RULES = ("max", "div", "single", "tflite", "onnx_int", "onnx_float")
RULE_CODES = {r: i for i, r in enumerate(RULES)}

_IN_LAYOUT = [("in_base", 20, False), ("in_h", 12, False), ("in_w", 12, False), ("in_pp", 8, False),
              ("in_cw0", 8, False), ("in_zp", 9, True)]
_OUT_LAYOUT = [("out_base", 20, False), ("out_h", 12, False), ("out_w", 12, False), ("out_pp", 8, False),
               ("out_cw0", 8, False)]
_GEOMETRY = [("kh", 8, False), ("kw", 8, False), ("sh", 4, False), ("sw", 4, False), ("dh", 4, False),
             ("dw", 4, False), ("pt", 8, False), ("pl", 8, False), ("pb", 8, False), ("pr", 8, False),
             ("oh", 12, False), ("ow", 12, False)]
_REQUANT = [("mode", 2, False), ("zp", 9, True), ("qmin", 9, True), ("qmax", 9, True)]
_POOL = [("pool", 2, False), ("rule", 3, False), ("pkh", 8, False), ("pkw", 8, False), ("pool_param", 24, False),
         ("pool_zp_in", 9, True), ("pool_zp", 9, True), ("pool_qmin", 9, True), ("pool_qmax", 9, True)]

FIELDS: dict[str, list[tuple[str, int, bool]]] = {
    # Whole program ends; the engine drops busy and waits for the next input.
    "END": [],
    # A segment ends: the host runs float/host nodes, then sends the next segment's inputs.
    "HALT": [("segment", 8, False)],
    # Host input stream -> scratchpad: ``h*w`` pixels of ``c`` channels (dense bytes on the stream).
    "INPUT": [("tensor", 8, False), ("kind", 2, False), ("out_base", 20, False), ("h", 12, False),
              ("w", 12, False), ("c", 16, False), ("pp", 8, False), ("cw0", 8, False), ("zp", 16, True),
              ("sw", 4, False), ("pl", 8, False), ("pr", 8, False), ("wpos", 12, False), ("cp", 8, False)],
    # Scratchpad -> host output stream: ``h*w`` pixels of ``c`` channels (dense bytes).
    "OUTPUT": [("tensor", 8, False), ("in_base", 20, False), ("h", 12, False), ("w", 12, False),
               ("c", 16, False), ("pp", 8, False), ("cw0", 8, False), *_DEP],
    # Conv / Dense on the array: loops mc (M chunks), nt (N tiles), kt (K tiles), m (beats) in hardware.
    # ``table``: 0, or 1 + the store address of a 256-entry int8 table applied on the write-back path.
    "MATMUL": [*_IN_LAYOUT, ("in_kind", 2, False), *_GEOMETRY, ("kcw", 8, False), ("cw_step", 8, False),
               ("n_tiles", 12, False), ("m_chunk", 16, False), ("w_base", 24, False), ("p_base", 24, False),
               *_REQUANT, ("table", 24, False), *_OUT_LAYOUT, *_POOL,
               *_DEP, ("dep_step", 20, False)],
    # Pooling unit alone (windows that overlap or pad, or a pool whose input has other readers).
    "POOL": [*_IN_LAYOUT, *_GEOMETRY, ("cws", 8, False), ("include_pad", 1, False), *_OUT_LAYOUT, *_POOL, *_DEP],
    # Integer Add (TFLite ADD) of two same-shaped tensors of ``words`` contiguous words each: a and b
    # rescaled to a common scale, summed, requantized (``mode``: MODE_CODES, single or tflite), then the
    # optional table. ``table_only``: out = table(a), a table activation pass (b and the arithmetic unused).
    # ``dep_base``: every earlier write (its inputs written, and its writes after every other unit's).
    "ADD": [("a_base", 20, False), ("b_base", 20, False), ("out_base", 20, False), ("words", 20, False),
            ("a_zp", 16, True), ("b_zp", 16, True), ("left_shift", 6, False),
            ("a_mul", 31, False), ("a_shift", 6, True), ("b_mul", 31, False), ("b_shift", 6, True),
            ("out_mul", 31, False), ("out_shift", 6, True), ("zp", 16, True), ("qmin", 16, True),
            ("qmax", 16, True), ("table", 24, False), ("mode", 2, False), ("table_only", 1, False), *_DEP],
}
OPCODES = {name: i for i, name in enumerate(FIELDS)}
OP_NAMES = {i: name for name, i in OPCODES.items()}

for _op, _fields in FIELDS.items():  # a table error is a programming error: fail at import
    if OP_BITS + sum(w for _, w, _ in _fields) > DESCRIPTOR_BITS:
        raise RuntimeError(f"descriptor {_op} does not fit {DESCRIPTOR_WORDS} words")


@dataclass(frozen=True)
class Descriptor:
    """One instruction: ``op`` and its fields by name (missing fields are 0)."""

    op: str
    fields: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.op not in FIELDS:
            raise ConfigError(f"unknown engine opcode {self.op!r}")
        known = {n for n, _, _ in FIELDS[self.op]}
        extra = sorted(set(self.fields) - known)
        if extra:
            raise ConfigError(f"{self.op}: unknown field(s) {', '.join(extra)}")
        # canonical form: every field, in table order, as int (so equal descriptors compare equal)
        object.__setattr__(self, "fields", {n: int(self.fields.get(n, 0)) for n, _, _ in FIELDS[self.op]})

    def __getitem__(self, name: str) -> int:
        return int(self.fields.get(name, 0))

    def to_words(self) -> list[int]:
        bits, pos = OPCODES[self.op], OP_BITS
        for name, width, signed in FIELDS[self.op]:
            v = self[name]
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
            if not lo <= v <= hi:
                raise ConfigError(f"{self.op}.{name} = {v} does not fit its {width}-bit "
                                  f"{'signed' if signed else 'unsigned'} field")
            bits |= (v & ((1 << width) - 1)) << pos
            pos += width
        return [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(DESCRIPTOR_WORDS)]

    @classmethod
    def from_words(cls, words) -> Descriptor:
        words = list(words)
        if len(words) != DESCRIPTOR_WORDS:
            raise ModelError(f"a descriptor has {DESCRIPTOR_WORDS} words, not {len(words)}")
        bits = sum(int(w) << (32 * i) for i, w in enumerate(words))
        code = bits & ((1 << OP_BITS) - 1)
        if code not in OP_NAMES:
            raise ModelError(f"unknown engine opcode {code}")
        op, pos, values = OP_NAMES[code], OP_BITS, {}
        for name, width, signed in FIELDS[op]:
            v = (bits >> pos) & ((1 << width) - 1)
            if signed and v >> (width - 1):
                v -= 1 << width
            values[name] = v
            pos += width
        if bits >> pos:
            raise ModelError(f"{op} descriptor has bits set past its last field")
        return cls(op, values)

    def text(self) -> str:
        """One disassembly line: the opcode, then every field as name=value."""
        return f"{self.op:<7}" + " ".join(f"{n}={self[n]}" for n, _, _ in FIELDS[self.op])


def field_table(op: str) -> list[tuple[str, int, int, bool]]:
    """(name, bit offset, width, signed) of each field of ``op``, the opcode at bit 0."""
    out, pos = [("op", 0, OP_BITS, False)], OP_BITS
    for name, width, signed in FIELDS[op]:
        out.append((name, pos, width, signed))
        pos += width
    return out


def markdown_tables() -> str:
    """The field tables of every opcode as Markdown (``docs/engine.md`` holds this text, tested equal)."""
    out = []
    for op in FIELDS:
        out.append(f"**`{op}`** (opcode {OPCODES[op]}): " + ", ".join(
            f"`{n}` {o}:{w}{'s' if s else ''}" for n, o, w, s in field_table(op)[1:]) if FIELDS[op] else
            f"**`{op}`** (opcode {OPCODES[op]}): no fields")
    return "\n\n".join(out)
