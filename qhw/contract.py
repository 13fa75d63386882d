"""The hardware contract: every number the RTL, the runtime, the testbenches and the FPGA flow share.

Pure Python (no Amaranth, directly or through an import), so the runtime, the manifest reader and
the FPGA flow can use it without building hardware, and each number is written once:

* **Stream payload fields** (``qhw.hw.layouts``): the int32 ``bias`` (``BIAS_BITS``), the
  unsigned ``multiplier`` M0 (``MULTIPLIER_BITS``), the signed ``shift`` (``SHIFT_BITS``), the
  float32 ``scale`` (``SCALE_BITS``), the command's ``mode`` (``MODE_BITS``, values
  ``MODE_CODES``), ``m`` (``GEMM_M_BITS``) and ``n`` (``MAX_GEMM_N_BITS``); activation and weight
  elements are one of ``ELEMENT_BITS``.
* **Limits**: ``MAX_GEMM_M`` and ``MAX_GEMM_N`` (the command fields), ``ACC_MAX_BITS`` (the
  arithmetic contract's ``|acc| < 2**47``), ``MAX_TILE_PIPELINE``. ``max_k`` and ``acc_depth``
  are ``ArrayConfig`` parameters.
* **Stage latencies** (cycles). The module that builds a stage checks its structure against the
  figure and raises ``ConfigError`` when they disagree (a check that survives ``python -O``); the
  accelerator's issue, accumulate and FIFO stages are measured end to end by the cycle-exact
  tests (``ArrayConfig.ideal_cycles``):

  - ``ISSUE_LATENCY``: the activation issue register;
  - ``mesh_latency()``: skew, mesh and de-skew of the generic array (``qhw.hw.array``);
  - ``PIPELINED_MUL_LATENCY``: ``MULT18X18D``'s input, pipeline and output registers
    (``qhw.hw.pe_pipelined.PipelinedMul``);
  - ``PE_PRODUCT_LATENCY``: a PE kind's product after its operands (``qhw.hw.dsp_array``);
  - ``PE_WEIGHT_WRITE_SKEW``: a PE kind's weight-row write lag per row (``qhw.hw.dsp_array``);
  - ``product_latency()``: a wide multiply, i.e. ``PipelinedMul`` partial products of ``CHUNK``-bit
    chunks, ``PARTIAL_PRODUCT_STAGES`` fabric register, ``tree_levels()`` registered adder levels
    (``qhw.hw.wide_mul``);
  - ``serial_product_latency()`` / ``serial_product_interval()``: the bit-serial multiply in logic
    cells (``qhw.hw.serial_mul``), a lane's product when ``requant_mul`` is ``serial``
    (``REQUANT_MULS``);
  - ``requant_latency()``: a requantization lane, the longer of its paths (``fixed_path_stages()`` or
    ``ONNX_PATH_STAGES`` plus their multiply) and ``REQUANT_OUTPUT_STAGES`` (``qhw.hw.requant``);
    ``requant_interval()``: cycles between a lane's inputs;
  - ``ACCUMULATE_LATENCY``: array output to the accumulated row (``qhw.hw.accumulator.Accumulator``);
  - ``FIFO_LATENCY``: a requantized row into the output queue to its ``out`` handshake
    (``qhw.hw.output_queue.OutputQueue``: its memory, then the read port's output register).

  ``accelerator_latency()`` adds them up. ``qhw.hw.config.ArrayConfig`` applies these formulas to
  one configuration and writes the results into the manifest, whose layout is
  ``MANIFEST_FORMAT_VERSION``.
"""

from __future__ import annotations

from .arith import ACC_LIMIT_BITS

__all__ = [
    "ACCUMULATE_LATENCY",
    "ACC_MAX_BITS",
    "BIAS_BITS",
    "CHUNK",
    "DSP_FABRIC_STAGES",
    "ELEMENT_BITS",
    "FIFO_LATENCY",
    "FIXED_PATH_STAGES",
    "FIXED_SHIFT_STAGES",
    "GEMM_M_BITS",
    "ISSUE_LATENCY",
    "PARAMS_READ_LATENCY",
    "POOL_MAX_LATENCY",
    "POOL_SUM_LATENCY",
    "ADD_MODES",
    "ADD_MUL_STAGES",
    "ADD_LANE_LATENCY",
    "ADD_LATENCY",
    "MANIFEST_FORMAT_VERSION",
    "REPLICA_ATTR",
    "MAX_GEMM_M",
    "MAX_GEMM_N",
    "MAX_GEMM_N_BITS",
    "MAX_TILE_PIPELINE",
    "MODE_BITS",
    "MODE_CODES",
    "MULTIPLIER_BITS",
    "ONNX_MANTISSA_BITS",
    "ONNX_PATH_STAGES",
    "PARTIAL_PRODUCT_STAGES",
    "PE_FAMILY",
    "PE_KINDS",
    "PE_PRODUCT_LATENCY",
    "PE_WEIGHT_WRITE_SKEW",
    "PIPELINED_MUL_LATENCY",
    "REQUANT_MULS",
    "REQUANT_OUTPUT_STAGES",
    "SCALE_BITS",
    "SERIAL_SHIFT_STAGES",
    "SPAD_READ_LATENCY",
    "TABLE_READ_LATENCY",
    "SHIFT_BITS",
    "TFLITE_BITS",
    "accelerator_latency",
    "chunk_count",
    "fixed_path_stages",
    "mesh_latency",
    "product_latency",
    "requant_interval",
    "requant_latency",
    "requant_operand_bits",
    "serial_product_interval",
    "serial_product_latency",
    "signed_bits",
    "tree_levels",
]

# Version of the manifest (NAME.json) layout; a reader refuses a newer one.
MANIFEST_FORMAT_VERSION = 1

# The RTLIL attribute of a register that is one of several deliberate copies (``qhw.hw.replica``);
# the FPGA flow's Yosys script keeps the flip-flops behind it (``qhw.fpga.flow.yosys_overrides``).
REPLICA_ATTR = "qhw_replica"

# ----------------------------------------------------------------------------- payload widths

ELEMENT_BITS = (4, 8, 16)   # activation and weight element widths the generator builds
BIAS_BITS = 32              # bias is int32 (activation zero point folded in by the host)
MULTIPLIER_BITS = 31        # M0 < 2**31, unsigned
SHIFT_BITS = 6              # shift in [-31, 30], signed
SCALE_BITS = 32             # the ``onnx`` scale, a float32 bit pattern
ONNX_MANTISSA_BITS = 24     # float32 significand, hidden bit included
TFLITE_BITS = 32            # TFLite's int32 view of the accumulator (``tflite`` mode)
MODE_BITS = 2               # the command's ``mode`` field
# Encoding of ``mode``; fixed so host code does not depend on which modes a build has.
MODE_CODES = {"single": 0, "tflite": 1, "onnx": 2}
GEMM_M_BITS = 16            # the command's ``m`` field
MAX_GEMM_N_BITS = 16        # the command's ``n`` field

# ----------------------------------------------------------------------------- limits

MAX_GEMM_M = (1 << GEMM_M_BITS) - 1
MAX_GEMM_N = (1 << MAX_GEMM_N_BITS) - 1
ACC_MAX_BITS = ACC_LIMIT_BITS + 1   # |acc| < 2**47 fits a signed 48-bit accumulator
MAX_TILE_PIPELINE = 4

# ----------------------------------------------------------------------------- latencies (cycles)

ISSUE_LATENCY = 1           # activation handshake to the array's input register
PIPELINED_MUL_LATENCY = 3   # ``PipelinedMul``: MULT18X18D input, pipeline and output registers
# ``ecp5-pipelined`` PEs add a fabric register in front of the DSP and one after it.
DSP_FABRIC_STAGES = 2
# Cycles each PE kind's product lags its operands; ``generic`` and ``ice40-dual`` are combinational.
PE_PRODUCT_LATENCY = {"generic": 0, "ice40-dual": 0, "ecp5-pipelined": PIPELINED_MUL_LATENCY + DSP_FABRIC_STAGES}
PE_KINDS = tuple(PE_PRODUCT_LATENCY)
PE_FAMILY = {"ice40-dual": "ice40", "ecp5-pipelined": "ecp5"}   # FPGA family of each DSP PE kind
# Cycles per row a PE kind's weight-row write lags the write port: ``ecp5-pipelined`` shifts the write
# down the rows with the activations' skew (row ``i``'s lands ``i`` cycles late), so an issuer that
# overlaps a tile's load with its first beat waits ``(rows - 1) * skew`` cycles more.
PE_WEIGHT_WRITE_SKEW = {"generic": 0, "ice40-dual": 0, "ecp5-pipelined": 1}

CHUNK = 17                  # an unsigned 17-bit chunk fits an 18-bit signed multiplier input
PARTIAL_PRODUCT_STAGES = 1  # the fabric register beside each partial product's DSP
# Requantization lane stages outside its multiplier (``qhw.hw.requant.RequantLane`` lists them).
# The fixed-point path: three before the multiply (sum, TFLite's int32 view, multiplicand),
# FIXED_SHIFT_STAGES for ``single``'s arithmetic right shift by ``31 - shift`` (0..62 places: by the
# multiple of 8, then the rest; as one 62-bit barrel shifter it was the ECP5 accelerator's critical
# path), one for the narrowing (TFLite's round-up add).
FIXED_SHIFT_STAGES = 2
FIXED_PATH_STAGES = 3 + FIXED_SHIFT_STAGES + 1
ONNX_PATH_STAGES = 11
REQUANT_OUTPUT_STAGES = 2   # + zero point, clamp
# How a lane multiplies (``ArrayConfig.requant_mul``): ``parallel`` (``wide_mul``: DSP partial products,
# one element per cycle) or ``serial`` (``serial_mul``: one bit of M0 per cycle in logic cells, no DSP;
# ``single``/``tflite`` only).
REQUANT_MULS = ("parallel", "serial")
# A serial lane's right shifts (``single``'s up to 62 places, TFLite's up to 31) in one register
# shifting 2 places per cycle instead of a barrel shifter: 31 more stages.
SERIAL_SHIFT_STAGES = 31
# ``Accumulator``: the psum and the accumulator row (read a cycle early) registered, then the add's
# result registered (a register between two carry chains: this add and the lanes' bias add).
ACCUMULATE_LATENCY = 2
# ``OutputQueue``: writes its memory, then reads into its output register (measured: a row written in
# cycle t is offered on ``out`` in cycle t + 2).
FIFO_LATENCY = 2
# The lanes register their inputs (row and requantization parameters) in the cycle a row arrives.
PARAMS_READ_LATENCY = 1
# Network-engine activation scratchpad (``qhw.hw.engine.memories.Scratchpad``): an address to its word
# on ``r_data``: the block RAM's synchronous read, then a register right after it, so no reader's
# logic sits behind the block RAM's clock-to-out (on ECP5 the DP16KD's 5.8 ns plus its route). Every
# scratchpad reader, the engine's latencies and the cycle model follow from this one number.
SPAD_READ_LATENCY = 2
# Network-engine table activations (``qhw.hw.engine.add_unit.TableUnit``, on the MATMUL write-back and
# in the ADD unit): a code to its table entry: the block RAM's synchronous read, then a register right
# after it (as the scratchpad's), so the fused pool's line-buffer update and the scratchpad's write
# data never follow the block RAM's clock-to-out. The MATMUL write-back looks a row up from the cycle
# it leaves the lanes, so its two registers are this read (``writeback_latency`` follows); ADD_LATENCY
# adds it.
TABLE_READ_LATENCY = 2
# Network-engine pooling (``qhw.hw.engine.pool``): a max is compared with the running entry and written
# the cycle after a window's last row; an average's window sum is registered, then goes through a
# requantization lane (``pool_avg_latency = POOL_SUM_LATENCY + requant_latency``).
POOL_MAX_LATENCY = 1
POOL_SUM_LATENCY = 1
# Network-engine integer Add (``qhw.hw.engine.add_unit``, TFLite ADD): a multiply-and-shift
# (``mul_shift_single``/``mul_shift_tflite``) is ADD_MUL_STAGES registers (multiplicand, product,
# shift, rounding); the lane is the zero point (1), the input rescale (a's, then b's the next
# cycle), the sum (1), the output rescale, which two lanes share (the second's sum a cycle later: 1),
# the zero point and clamp (1). ADD_LATENCY
# counts from the cycle the second operand's read is requested to the cycle its word is written:
# the scratchpad read (SPAD_READ_LATENCY), the lane, the table stage (TABLE_READ_LATENCY, registers when
# no table is used).
ADD_MUL_STAGES = 4
# the rounding modes TFLite ADD has a fixed-point rule for (``onnx``'s QLinearAdd is float: host)
ADD_MODES = ("single", "tflite")
ADD_LANE_LATENCY = 1 + ADD_MUL_STAGES + 1 + ADD_MUL_STAGES + 1 + 1
ADD_LATENCY = SPAD_READ_LATENCY + ADD_LANE_LATENCY + TABLE_READ_LATENCY


def signed_bits(lo: int, hi: int) -> int:
    """Smallest n such that [lo, hi] fits a signed n-bit integer.

    >>> signed_bits(-128, 127), signed_bits(0, 128), signed_bits(-(1 << 31), (1 << 31) - 1)
    (8, 9, 32)
    """
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def chunk_count(bits: int, signed: bool) -> int:
    """Chunks of a wide operand: 17-bit unsigned ones from the bottom, a signed top chunk of up to 18 bits."""
    limit = CHUNK + 1 if signed else CHUNK
    n = 1
    while bits - CHUNK * (n - 1) > limit:
        n += 1
    return n


def tree_levels(terms: int) -> int:
    """Registered pairwise adder levels that reduce ``terms`` values to one."""
    levels = 0
    while terms > 1:
        terms = (terms + 1) // 2
        levels += 1
    return levels


def product_latency(a_bits: int, a_signed: bool, b_bits: int, *, addend: bool) -> int:
    """Cycles of a wide multiply ``a * b (+ addend)`` (b unsigned, ``qhw.hw.wide_mul``):
    ``PIPELINED_MUL_LATENCY + PARTIAL_PRODUCT_STAGES + tree_levels(partial products + addend)``."""
    terms = chunk_count(a_bits, a_signed) * chunk_count(b_bits, False) + int(addend)
    return PIPELINED_MUL_LATENCY + PARTIAL_PRODUCT_STAGES + tree_levels(terms)


def serial_product_latency(b_bits: int) -> int:
    """Cycles of ``qhw.hw.serial_mul``'s ``a * b + addend``: the load, one step per bit of ``b``, the
    output register (the addend's high part added)."""
    return b_bits + 2


def serial_product_interval(b_bits: int) -> int:
    """Cycles between two products of one ``qhw.hw.serial_mul`` unit: the load and ``b_bits`` steps."""
    return b_bits + 1


def requant_interval(requant_mul: str = "parallel") -> int:
    """Cycles between two inputs of one requantization lane: 1, or the serial multiply's interval."""
    return 1 if requant_mul == "parallel" else serial_product_interval(MULTIPLIER_BITS)


def fixed_path_stages(requant_mul: str = "parallel") -> int:
    """The fixed-point path's stages besides its multiply: ``FIXED_PATH_STAGES``; a serial lane's shift
    register (loaded in one stage, then ``SERIAL_SHIFT_STAGES``) replaces the barrel shifter's
    ``FIXED_SHIFT_STAGES``."""
    if requant_mul == "serial":
        return FIXED_PATH_STAGES - FIXED_SHIFT_STAGES + 1 + SERIAL_SHIFT_STAGES
    return FIXED_PATH_STAGES


def requant_operand_bits(accumulator_bits: int) -> int:
    """Width of the fixed-point path's multiplicand: ``acc + bias``, or TFLite's int32 view if wider."""
    return max(accumulator_bits, TFLITE_BITS)


def requant_latency(accumulator_bits: int, rounding, requant_mul: str = "parallel") -> int:
    """Stages of one requantization lane: the longer of the built paths (fixed point for ``single`` /
    ``tflite``: ``fixed_path_stages()`` + a 31-bit M0 multiply with the rounding addend, ``wide_mul``'s or
    with ``requant_mul="serial"`` ``serial_mul``'s; ``onnx``: ``ONNX_PATH_STAGES`` + the 24x24-bit
    mantissa multiply), then ``REQUANT_OUTPUT_STAGES``. 15 for int8 without ``onnx``, 19 with it; 71
    serial (its shifts take ``SERIAL_SHIFT_STAGES``)."""
    paths = []
    if "single" in rounding or "tflite" in rounding:
        if requant_mul == "serial":
            mul = serial_product_latency(MULTIPLIER_BITS)
        else:
            mul = product_latency(requant_operand_bits(accumulator_bits), True, MULTIPLIER_BITS, addend=True)
        paths.append(fixed_path_stages(requant_mul) + mul)
    if "onnx" in rounding:
        paths.append(ONNX_PATH_STAGES + product_latency(ONNX_MANTISSA_BITS, False, ONNX_MANTISSA_BITS,
                                                        addend=False))
    return max(paths) + REQUANT_OUTPUT_STAGES


def mesh_latency(tile_grid: tuple[int, int], tile_pipeline: int) -> int:
    """Issue register to de-skewed output of a ``TR`` x ``TC`` tile grid: ``(TR + TC - 2) * tile_pipeline + 1``."""
    tr, tc = tile_grid
    return (tr + tc - 2) * tile_pipeline + 1


def accelerator_latency(*, array_latency: int, share_latency: int, requant_latency: int) -> int:
    """Activation handshake (last K tile) to its output row: ``ISSUE_LATENCY + array_latency +
    ACCUMULATE_LATENCY + share_latency + requant_latency + FIFO_LATENCY``."""
    return ISSUE_LATENCY + array_latency + ACCUMULATE_LATENCY + share_latency + requant_latency + FIFO_LATENCY
