"""``DspArray``: the systolic array with its multipliers mapped onto FPGA DSP blocks by hand.

Same ports and dataflow as ``qhw.hw.array.SystolicArray`` (aligned rows in, one partial-sum row
out), for the default tiling (1x1 tiles, one register between neighbouring PEs). The PE kind is
``config.pe`` (its one source, so ``config.array_latency`` describes the array built); two kinds:

``pe="ice40-dual"``
    Horizontally adjacent PEs ``(i, 2q)`` and ``(i, 2q+1)`` share one ``DualMul8`` (an iCE40
    ``SB_MAC16`` in dual signed 8x8 mode): 2 MACs per DSP block. Combinational, so
    ``latency == config.mesh_latency``. Needs 8-bit activations and weights.
``pe="ecp5-pipelined"``
    Each PE's product comes from a ``PipelinedMul`` (``MULT18X18D`` with input, pipeline and output
    registers) plus a fabric register on each side (``qhw.contract.DSP_FABRIC_STAGES``): every product
    is ``PipelinedMul.LATENCY + 2`` cycles late, uniformly, so the wavefront stays aligned and
    ``latency == config.mesh_latency + 5``.
    The fabric registers absorb the routes between the DSP column and the fabric: without the one
    after the DSP, the DSP-to-adder route was 4.3 ns of a 7.0 ns critical path at 8x8 on the
    ECP5-85F (142.5 MHz); without the one in front, the weight register -> bank multiplexer -> DSP
    input route was 7.1 ns of 7.9 ns at 12x12 (126.4 MHz).

``family`` selects the vendor primitive (``"ice40"``/``"ecp5"``); ``None`` builds the portable
equivalent, used by simulation and ``qhw generate``. ``Accelerator`` builds one when ``config.pe``
names a DSP kind; the FPGA array top builds ``replace(config, pe=...)`` for ``--pe``. The built
product stages are checked against ``qhw.contract.PE_PRODUCT_LATENCY`` (``ConfigError``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring

from ..contract import PE_FAMILY, PE_PRODUCT_LATENCY, PE_WEIGHT_WRITE_SKEW
from ..errors import ConfigError
from .config import ArrayConfig, check_config
from .mesh import act_shape, array_ports
from .pe_ice40 import DualMul8
from .pe_pipelined import PipelinedMul
from .skew import Skew, delayed

__all__ = ["DSP_KINDS", "DspArray", "check_dsp_config"]

DSP_KINDS = tuple(PE_FAMILY)    # ("ice40-dual", "ecp5-pipelined")


def check_dsp_config(config: ArrayConfig, family: str | None = None) -> None:
    """Raise ``ConfigError`` (one line) unless ``DspArray`` can build ``config`` (``config.pe`` a DSP kind;
    ``ArrayConfig`` itself checks the tiling and element widths) with ``family``'s primitives."""
    check_config(config)
    if config.pe not in DSP_KINDS:
        raise ConfigError(f"DspArray needs config.pe one of {', '.join(DSP_KINDS)}, not {config.pe!r}")
    expected = PE_FAMILY[config.pe]
    if family not in (None, expected):
        raise ConfigError(f"{config.pe} PEs need family {expected!r} or None, not {family!r}")


class DspArray(wiring.Component):
    """Drop-in for ``SystolicArray`` with DSP-mapped multipliers of kind ``config.pe`` (see the module
    docstring)."""

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        check_dsp_config(config, family)
        self.config, self.family = config, family
        super().__init__(array_ports(config))

    @property
    def product_latency(self) -> int:
        """Cycles a product lags its operands: ``config.product_latency`` (0 for ice40-dual,
        ``PipelinedMul.LATENCY + 2`` for ecp5-pipelined)."""
        return self.config.product_latency

    @property
    def latency(self) -> int:
        """``config.array_latency`` = ``mesh_latency + product_latency`` cycles from ``a_in`` to ``psum_out``."""
        return self.config.array_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.rows, c.cols
        ashape = act_shape(c)
        lane = data.StructLayout({"a": ashape, "bank": 1})
        m.submodules.skew = skew = Skew(shape=lane, delays=list(range(R)))
        for i in range(R):
            m.d.comb += [skew.i[i].a.eq(self.a_in[i]), skew.i[i].bank.eq(self.bank_in)]

        # The weight-row write. ecp5-pipelined: shifted down the rows with the activations' skew
        # (row i's enable, bank and data i registers late, as row i's activations are), so each
        # register drives one row instead of the whole array; a write still takes effect for every
        # ``a_in`` row sampled after it. ice40-dual keeps the direct write (no flip-flops to spare).
        # Row i's write lands i cycles late: ``config.weight_write_lag`` tells the issuers.
        shift_write = PE_WEIGHT_WRITE_SKEW[c.pe] == 1
        w_we, w_bank, w_data = [], [], []
        bank_s, data_s = self.w_bank, self.w_data
        for i in range(R):
            if shift_write and i > 0:
                bank_s = delayed(m, bank_s, 1, name=f"w_bank_row{i}", reset_less=True)
                data_s = delayed(m, data_s, 1, name=f"w_data_row{i}", reset_less=True)
            w_we.append(delayed(m, self.w_we[i], i if shift_write else 0, name=f"w_we_row{i}"))
            w_bank.append(bank_s)
            w_data.append(data_s)

        # Weight banks and the activation/bank pipeline (one register between neighbouring PEs).
        # Datapath registers have no reset: the accumulator's tags say which psums are real, and a
        # tile's weights are all written before its first activation.
        a = [[None] * C for _ in range(R)]
        bank = [[None] * C for _ in range(R)]
        wsel = [[None] * C for _ in range(R)]
        for i in range(R):
            for j in range(C):
                if j == 0:
                    a[i][j], bank[i][j] = skew.o[i].a, skew.o[i].bank
                else:
                    a[i][j] = Signal(ashape, name=f"a_{i}_{j}", reset_less=True)
                    bank[i][j] = Signal(name=f"bank_{i}_{j}", reset_less=True)
                    m.d.sync += [a[i][j].eq(a[i][j - 1]), bank[i][j].eq(bank[i][j - 1])]
                w = [Signal(signed(c.weight_bits), name=f"w{b}_{i}_{j}", reset_less=True) for b in range(2)]
                with m.If(w_we[i]):
                    with m.If(w_bank[i]):
                        m.d.sync += w[1].eq(w_data[i][j])
                    with m.Else():
                        m.d.sync += w[0].eq(w_data[i][j])
                wsel[i][j] = Signal(signed(c.weight_bits), name=f"wsel_{i}_{j}")
                m.d.comb += wsel[i][j].eq(Mux(bank[i][j], w[1], w[0]))

        # Products.
        prod = [[None] * C for _ in range(R)]
        built = None       # cycles from a PE's operands to its registered-in product, as built
        for i in range(R):
            if c.pe == "ice40-dual":
                built = 0      # DualMul8 is combinational
                for j in range(0, C, 2):
                    mul = DualMul8(a_shape=ashape, b_shape=signed(c.weight_bits), family=self.family)
                    m.submodules[f"mul_{i}_{j}"] = mul
                    m.d.comb += [mul.a0.eq(a[i][j]), mul.b0.eq(wsel[i][j])]
                    prod[i][j] = mul.p0
                    if j + 1 < C:
                        m.d.comb += [mul.a1.eq(a[i][j + 1]), mul.b1.eq(wsel[i][j + 1])]
                        prod[i][j + 1] = mul.p1
                    else:
                        m.d.comb += [mul.a1.eq(0), mul.b1.eq(0)]
            else:
                for j in range(C):
                    mul = PipelinedMul(a_shape=ashape, b_shape=signed(c.weight_bits), family=self.family)
                    m.submodules[f"mul_{i}_{j}"] = mul
                    # Fabric registers in front of the DSP: the weight-bank multiplexer and the
                    # activation chain then reach the DSP's input registers through a bare route.
                    a_f = Signal(ashape, name=f"a_f_{i}_{j}", reset_less=True)
                    w_f = Signal(signed(c.weight_bits), name=f"w_f_{i}_{j}", reset_less=True)
                    m.d.sync += [a_f.eq(a[i][j]), w_f.eq(wsel[i][j])]
                    m.d.comb += [mul.a.eq(a_f), mul.b.eq(w_f)]
                    p_f = Signal.like(mul.p, name=f"prod_{i}_{j}", reset_less=True)  # fabric register after the DSP
                    m.d.sync += p_f.eq(mul.p)
                    prod[i][j] = p_f
                    built = 1 + mul.latency + 1
        if built != PE_PRODUCT_LATENCY[c.pe]:
            raise ConfigError(f"DspArray: {c.pe} products were built {built} cycles late, but the hardware "
                              f"contract (PE_PRODUCT_LATENCY) says {PE_PRODUCT_LATENCY[c.pe]}")

        # Partial sums flow down, one register per row (the bottom row's is the output register).
        bottom = []
        for j in range(C):
            psum = None
            for i in range(R):
                s = Signal(signed(c.psum_bits), name=f"psum_{i}_{j}", reset_less=True)
                m.d.sync += s.eq(prod[i][j] if psum is None else psum + prod[i][j])
                psum = s
            bottom.append(psum)
        m.submodules.deskew = deskew = Skew(shape=signed(c.psum_bits), delays=[C - 1 - j for j in range(C)])
        for j in range(C):
            m.d.comb += deskew.i[j].eq(bottom[j])
        m.d.comb += self.psum_out.eq(deskew.o)
        return m
