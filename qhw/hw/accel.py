"""The accelerator top: command, weight, parameter and activation streams in, result rows out.

A GEMM ``Y = requant(X @ W + bias)`` with X (M x K), W (K x N) runs as a
sequence of weight tiles ``W[k0:k0+rows, n0:n0+cols]``, N tiles outer, K tiles
inner. For each tile the host streams M activation beats ``X[m, k0:k0+rows]``.
Partial results of all but the last K tile are kept in an on-chip accumulator
memory; rows of the last K tile are requantized and written to the output FIFO.
See ``docs/hardware.md`` for the protocol.

The top only joins its blocks, each a component with its own latency::

    cmd -> CommandRegister -> gemm (start, the running command) to the loader, issuer and lanes
    weights, params -> Loader -> weight banks (array), parameter banks (RequantBank)
    act -> Issuer -> SystolicArray / DspArray -> Accumulator -> RequantBank -> OutputQueue -> out

* The datapath behind the issuer never stalls; it is a fixed-latency pipeline
  with valid bits. Back-pressure is handled at its entry by the issuer's
  credits: an activation beat whose row will produce an output is accepted
  only while its output row has a reserved queue slot, so a stalled consumer
  can never cause loss or duplication and no ``ready`` fans out across the array.
* Weights and requant parameters are double-buffered in two banks. The
  loader fills the bank not in use; the bank bit travels with each activation,
  so the next tile starts the cycle after the current one ends.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .accumulator import Accumulator
from .array import SystolicArray
from .command import CommandRegister
from .config import PE_FAMILY, ArrayConfig, check_config
from .dsp_array import DspArray
from .issuer import Issuer
from .layouts import act_layout, command_layout, out_layout, params_layout, weights_layout
from .loader import Loader
from .output_queue import OutputQueue
from .requant_bank import RequantBank

__all__ = ["Accelerator", "accelerator_signature"]


def accelerator_signature(config: ArrayConfig) -> wiring.Signature:
    """The top's ports; a function so the manifest can list them without building hardware."""
    return wiring.Signature({
        "cmd": In(stream.Signature(command_layout(config))),
        "weights": In(stream.Signature(weights_layout(config))),
        "params": In(stream.Signature(params_layout(config))),
        "act": In(stream.Signature(act_layout(config))),
        "out": Out(stream.Signature(out_layout(config))),
        "busy": Out(1),
        "error": Out(1),
    })


class Accelerator(wiring.Component):
    """Weight-stationary INT GEMM accelerator with on-chip K accumulation and requantization.

    Streams (``amaranth.lib.stream``, valid/ready):

    ``cmd``
        One beat per GEMM (``command_layout``); accepted only when idle.
        Requires 1 <= M, 1 <= K <= ``max_k``, 1 <= N, M <= ``acc_depth`` when K > ``rows``,
        and a built ``mode``.
    ``weights``
        Per tile: ``min(rows, K - k0)`` weight rows (rows past K are zero-filled in hardware).
    ``params``
        Per N tile: one beat of bias, multiplier, shift and (``onnx`` built) float32 scale
        (``params_layout``), consumed before that N tile's last weight tile.
    ``act``
        Per tile: M beats ``X[m, k0:k0+rows]`` (elements past K are ignored).
    ``out``
        Per N tile: M beats ``Y[m, n0:n0+cols]`` (columns past N are padding).

    ``busy`` is high from the command handshake until the last result is taken. A command
    outside those limits (or with a ``mode`` that is not built) is accepted and dropped, and
    ``error`` is set until the next command.

    The array is ``SystolicArray`` for ``config.pe == "generic"``, else ``DspArray`` of that kind;
    ``family`` (``"ice40"``/``"ecp5"``, the FPGA flow) selects its vendor DSP primitive, ``None``
    (simulation, ``qhw generate``) the portable equivalent.
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        check_config(config)
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        if config.pe != "generic" and family not in (None, PE_FAMILY[config.pe]):
            raise ConfigError(f"pe {config.pe} needs family {PE_FAMILY[config.pe]!r} or None, not {family!r}")
        self.config, self.family = config, family
        super().__init__(accelerator_signature(config))

    @property
    def latency(self) -> int:
        """Activation handshake (last K tile) to its result on ``out`` (``config.latency``)."""
        return self.config.latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.command = command = CommandRegister(config=c)
        m.submodules.loader = loader = Loader(config=c)
        m.submodules.issuer = issuer = Issuer(config=c)
        if c.pe == "generic":
            m.submodules.array = array = SystolicArray(config=c)
        else:
            m.submodules.array = array = DspArray(config=c, family=self.family)
        m.submodules.accumulator = accumulator = Accumulator(config=c, family=self.family)
        m.submodules.requant = requant = RequantBank(config=c, family=self.family)
        m.submodules.queue = queue = OutputQueue(config=c)
        if issuer.latency + array.latency + accumulator.latency + requant.latency + queue.latency != c.latency:
            raise ConfigError(f"the blocks' latencies do not add up to config.latency ({c.latency})")

        wiring.connect(m, wiring.flipped(self.cmd), command.cmd)
        wiring.connect(m, command.gemm, loader.gemm, issuer.gemm, requant.gemm)
        wiring.connect(m, wiring.flipped(self.weights), loader.weights)
        wiring.connect(m, wiring.flipped(self.params), loader.params)
        wiring.connect(m, loader.banks, issuer.banks)
        wiring.connect(m, wiring.flipped(self.act), issuer.act)
        wiring.connect(m, issuer.tag, accumulator.tag)
        wiring.connect(m, accumulator.row, requant.row)
        wiring.connect(m, requant.out, queue.i)
        wiring.connect(m, queue.o, wiring.flipped(self.out))
        m.d.comb += [
            array.w_we.eq(loader.w_we), array.w_bank.eq(loader.w_bank), array.w_data.eq(loader.w_data),
            array.a_in.eq(issuer.a_in), array.bank_in.eq(issuer.bank_in),
            accumulator.psum.eq(array.psum_out), requant.next_bank.eq(accumulator.next_bank),
            requant.param_banks.eq(loader.param_banks),
            issuer.taken.eq(queue.taken),
            command.done.eq(~loader.busy & issuer.idle),
            self.busy.eq(command.busy), self.error.eq(command.error),
        ]
        return m
