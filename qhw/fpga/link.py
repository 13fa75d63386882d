"""The host link's gateware, independent of what sits behind it (``qhw.fpga.protocol`` for the format).

``HostLink`` = ``UARTRx`` -> receive FIFO -> ``FrameParser`` -> ``LinkControl`` -> ``data`` stream
(accepted, in-sequence frames for the payload); the payload's ``result`` stream and the link's
acks, errors and info -> ``LinkControl`` -> ``FrameSender`` -> ``UARTTx``. The payload sees only
``data`` (op, payload bytes), ``result``, ``soft_reset`` (one cycle, the cycle after a reset frame is taken) and
reports ``rejected`` (level; its rising edge is reported) and ``not_ready`` (pulse).
"""

from __future__ import annotations

from amaranth.asserts import Initial
from amaranth.hdl import Assert, Assume, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .protocol import ERRORS, OPCODES, REPLIES, SEQUENCED, SYNC, crc16_byte
from .uart import UARTRx, UARTTx

__all__ = ["FrameParser", "FrameSender", "HostLink", "LinkControl", "ReceiveFifo", "frame_layout"]


class ReceiveFifo(SyncFIFOBuffered):
    """Amaranth's ``SyncFIFOBuffered``, cycle for cycle, with its inner queue's "not empty" and "not
    full" kept as registers decided a cycle ahead from the level: ``r_rdy``'s enable, the inner read
    and the write enable are a LUT or two from flip-flops, not behind compares of the 8-9-bit level
    (the UP5K board top's late link path, ``inner_level`` -> ``r_rdy`` enable, 27.7 ns at 05b0813).
    On the ``"formal"`` platform the two flags' definitions are asserted, beside upstream's pointer
    invariants."""

    def elaborate(self, platform):
        if self.depth < 3:
            raise ConfigError(f"ReceiveFifo needs a depth of at least 3, not {self.depth}")
        m = Module()
        inner_depth = self.depth - 1
        inner_level = Signal(range(inner_depth + 1))
        inner_r_rdy = Signal(name="inner_r_rdy")            # inner_level != 0
        w_rdy = Signal(name="w_rdy_r", init=1)              # inner_level != inner_depth
        m.d.comb += [self.w_rdy.eq(w_rdy), self.w_level.eq(self.level), self.r_level.eq(self.level),
                     self.level.eq(inner_level + self.r_rdy)]
        do_write = w_rdy & self.w_en
        do_inner_read = inner_r_rdy & (~self.r_rdy | self.r_en)

        storage = m.submodules.storage = Memory(shape=self.width, depth=inner_depth, init=[])
        w_port = storage.write_port()
        r_port = storage.read_port(domain="sync")
        produce = Signal(range(inner_depth))
        consume = Signal(range(inner_depth))
        m.d.comb += [w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(do_write),
                     r_port.addr.eq(consume), self.r_data.eq(r_port.data), r_port.en.eq(do_inner_read)]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == inner_depth - 1, 0, produce + 1))
        with m.If(do_inner_read):
            m.d.sync += consume.eq(Mux(consume == inner_depth - 1, 0, consume + 1))
        with m.If(do_write & ~do_inner_read):
            m.d.sync += [inner_level.eq(inner_level + 1), inner_r_rdy.eq(1), w_rdy.eq(inner_level != inner_depth - 1)]
        with m.If(do_inner_read & ~do_write):
            m.d.sync += [inner_level.eq(inner_level - 1), inner_r_rdy.eq(inner_level != 1), w_rdy.eq(1)]
        with m.If(do_inner_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)

        if platform == "formal":
            facts = [inner_r_rdy == (inner_level != 0), w_rdy == (inner_level != inner_depth),
                     produce < inner_depth, consume < inner_depth,
                     Mux(produce == consume, (inner_level == 0) | (inner_level == inner_depth),
                         inner_level == Mux(produce > consume, produce - consume, inner_depth + produce - consume))]
            with m.If(Initial()):
                m.d.comb += [Assume(f) for f in facts]
            with m.Else():
                m.d.comb += [Assert(f) for f in facts]
        return m


def frame_layout(max_payload: int) -> data.StructLayout:
    return data.StructLayout({"op": 8, "seq": 8, "len": 16, "payload": 8 * max_payload})


def _crc_matrix() -> list[list[tuple[str, int]]]:
    """For each CRC output bit, the state and data bits it is the XOR of (the CRC is linear over GF(2);
    derived from ``protocol.crc16_byte`` so there is one definition)."""
    taps: list[list[tuple[str, int]]] = [[] for _ in range(16)]
    for src, n in (("crc", 16), ("byte", 8)):
        for i in range(n):
            if src == "crc":
                out = crc16_byte(1 << i, 0)
            else:
                out = crc16_byte(0, 1 << i)
            for j in range(16):
                if out >> j & 1:
                    taps[j].append((src, i))
    return taps


_CRC_TAPS = _crc_matrix()


def _crc_step(crc, byte):
    """CRC-16/CCITT-FALSE of one byte, as XOR logic (``protocol.crc16_byte``)."""
    src = {"crc": crc, "byte": byte}
    return Cat(*(Cat(*(src[s][i] for s, i in taps)).xor() for taps in _CRC_TAPS))


class FrameParser(wiring.Component):
    """Bytes in, CRC-checked frames out; hunts for the sync bytes after anything else.

    ``lengths`` maps each known opcode to its payload length; for an opcode in ``units`` (opcode ->
    a power of two) to its *largest* length, and any whole, non-zero number of units up to it is
    valid (the network engine's load words and input beats, several per frame). A frame longer than
    ``max_payload`` is abandoned after its header (``bad_length``); a partial frame with no byte for
    ``timeout`` cycles is abandoned (``timeout``); a complete frame with a bad CRC, an unknown opcode
    or a length that is not its opcode's is reported and dropped: ``err_valid`` for one cycle, with
    ``err_code`` and ``err_detail`` (the frame's opcode; 0 for ``timeout``) valid in that cycle.

    The payload bytes go to a block RAM, not to ``o.payload`` (whose ``payload`` field is zero): while
    ``o.valid`` a frame's byte ``i`` is read at ``rd_addr`` = ``i``, on ``rd_data`` a cycle later (on the
    UP5K the frame in flip-flops was 3 % of the logic cells, for a second copy behind it).
    """

    # The errors a parser reports (``err_code``), each with whether ``err_detail`` carries something
    # (the opcode) or is always 0: ``LinkControl`` keeps a detail register only for the former.
    ERROR_DETAIL = {"bad_crc": True, "bad_length": True, "unknown_opcode": True, "timeout": False}

    def __init__(self, *, lengths: dict[int, int], timeout: int, max_payload: int,
                 units: dict[int, int] | None = None):
        if max_payload < max(lengths.values()):
            raise ConfigError("max_payload must hold every opcode's payload")
        units = dict(units or {})
        for op, u in units.items():
            if op not in lengths or u < 1 or u & (u - 1) or lengths[op] % u:
                raise ConfigError(f"opcode {op}: unit {u} must be a power of two dividing its largest length")
        self.lengths, self.timeout, self.max_payload, self.units = dict(lengths), timeout, max_payload, units
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(frame_layout(self.max_payload))),
                          "rd_addr": In(range(self.max_payload)), "rd_data": Out(8),
                          "err_valid": Out(1), "err_code": Out(4), "err_detail": Out(8)})

    def elaborate(self, platform):
        m = Module()
        # The byte enters a register first (``byte``, with its tests as flags beside it), so the
        # parser's tests start from flip-flops, not from the receive FIFO's block RAM output; the
        # state's ``ready`` is a register too (``ready_r``, set with every state change), so a take
        # is two flip-flops ANDed. The stage costs a cycle of latency, no throughput.
        M = self.max_payload
        byte, full = Signal(8, name="byte"), Signal(name="full")
        is_sync0, is_sync1 = Signal(name="is_sync0"), Signal(name="is_sync1")
        is_zero, is_one = Signal(name="is_zero"), Signal(name="is_one")
        gt_lo, gt_hi, eq_hi = Signal(name="gt_lo"), Signal(name="gt_hi"), Signal(name="eq_hi")
        ready_r = Signal(init=1, name="ready_r")        # the state takes bytes
        take = Signal()
        m.d.comb += [self.i.ready.eq(~full | ready_r), take.eq(full & ready_r)]
        with m.If(self.i.valid & self.i.ready):
            b = self.i.payload
            m.d.sync += [byte.eq(b), full.eq(1), is_sync0.eq(b == SYNC[0]), is_sync1.eq(b == SYNC[1]),
                         is_zero.eq(b == 0), is_one.eq(b == 1), gt_lo.eq(b > (M & 0xFF)),
                         gt_hi.eq(b > (M >> 8)), eq_hi.eq(b == (M >> 8))]
        with m.Elif(take):
            m.d.sync += full.eq(0)
        READY = ("HUNT", "SYNC1", "OP", "SEQ", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1")

        def goto(state):
            m.next = state
            m.d.sync += ready_r.eq(state in READY)

        f = self.o.payload
        crc = Signal(16)
        crc_next = Signal(16)
        m.d.comb += crc_next.eq(_crc_step(crc, byte))
        crc_zero = Signal(name="crc_zero")      # crc == 0 last cycle
        m.d.sync += crc_zero.eq(crc == 0)
        count = Signal(range(M + 1))
        rem = Signal(range(M + 1))              # payload bytes not yet taken
        last = Signal()         # the next payload byte is the last, a cycle ahead: no compare before the state
        # the length's tests, from the flags of its two bytes: f.len > M, == 0, == 1
        lo_zero, lo_one, lo_gt = Signal(name="lo_zero"), Signal(name="lo_one"), Signal(name="lo_gt")
        len_big, len_zero, len_one = Signal(name="len_big"), Signal(name="len_zero"), Signal(name="len_one")
        m.submodules.buf = buf = Memory(shape=8, depth=M, init=[], attrs={"ram_style": "block"})
        wp, rp = buf.write_port(), buf.read_port()
        m.d.comb += [wp.addr.eq(count), wp.data.eq(byte), rp.addr.eq(self.rd_addr), self.rd_data.eq(rp.data)]
        idle = Signal(range(self.timeout + 1))
        hunting = Signal()

        # Errors leave through registers (a cycle after their byte): the CRC check behind the receive
        # FIFO's block RAM output is a path of its own, not one with the control's error registers.
        m.d.sync += self.err_valid.eq(0)

        def error(code, detail):
            assert code in self.ERROR_DETAIL and (self.ERROR_DETAIL[code] or isinstance(detail, int) and detail == 0)
            m.d.sync += [self.err_valid.eq(1), self.err_code.eq(ERRORS[code]), self.err_detail.eq(detail)]

        # ``idle == timeout`` as a register decided a cycle ahead: no counter compare before the errors
        at_timeout = Signal(init=self.timeout == 0)
        with m.If(take | hunting):
            m.d.sync += [idle.eq(0), at_timeout.eq(self.timeout == 0)]
        with m.Elif(~at_timeout):
            m.d.sync += [idle.eq(idle + 1), at_timeout.eq(idle == self.timeout - 1)]

        stuck = Signal()
        m.d.comb += stuck.eq(at_timeout & ~take)

        def abandon_if_stuck():
            # A partial frame that stops arriving is abandoned, so the next frame is found.
            with m.If(stuck):
                error("timeout", 0)
                goto("HUNT")

        # The opcode's tests, registers free-running on ``f.op``/``f.len``: those are fixed from LEN1
        # on, at least four cycles before CHECK reads the tests.
        known = Signal(name="known")
        length_ok = Signal(name="length_ok")
        m.d.sync += [known.eq(0), length_ok.eq(0)]
        with m.Switch(f.op):
            for op, n in self.lengths.items():
                with m.Case(op):
                    if op in self.units:
                        u = self.units[op]
                        ok = (f.len != 0) & (f.len <= n) & ((f.len & (u - 1)) == 0)
                    else:
                        ok = f.len == n
                    m.d.sync += [known.eq(1), length_ok.eq(ok)]

        with m.FSM(name="parser"):
            with m.State("HUNT"):
                m.d.comb += hunting.eq(1)
                with m.If(take & is_sync0):
                    goto("SYNC1")
            with m.State("SYNC1"):
                abandon_if_stuck()
                with m.If(take):
                    with m.If(is_sync1):
                        m.d.sync += crc.eq(0xFFFF)
                        goto("OP")
                    with m.Elif(~is_sync0):
                        goto("HUNT")
            for state, field, nxt in (("OP", f.op, "SEQ"), ("SEQ", f.seq, "LEN0")):
                with m.State(state):
                    abandon_if_stuck()
                    with m.If(take):
                        m.d.sync += [field.eq(byte), crc.eq(crc_next)]
                        goto(nxt)
            with m.State("LEN0"):
                abandon_if_stuck()
                with m.If(take):
                    m.d.sync += [f.len[:8].eq(byte), crc.eq(crc_next), lo_zero.eq(is_zero), lo_one.eq(is_one),
                                 lo_gt.eq(gt_lo)]
                    goto("LEN1")
            with m.State("LEN1"):
                abandon_if_stuck()
                with m.If(take):
                    m.d.sync += [f.len[8:].eq(byte), crc.eq(crc_next), count.eq(0),
                                 len_big.eq(gt_hi | (eq_hi & lo_gt)), len_zero.eq(lo_zero & is_zero),
                                 len_one.eq(lo_one & is_zero)]
                    goto("LENGTH")
            with m.State("LENGTH"):
                # the length tested a cycle after its last byte, from registers (no byte is taken)
                m.d.sync += [last.eq(len_one), rem.eq(f.len)]
                with m.If(len_big):
                    error("bad_length", f.op)
                    goto("HUNT")
                with m.Elif(len_zero):
                    goto("CRC0")
                with m.Else():
                    goto("PAYLOAD")
            with m.State("PAYLOAD"):
                abandon_if_stuck()
                with m.If(take):
                    m.d.comb += wp.en.eq(1)
                    m.d.sync += [crc.eq(crc_next), count.eq(count + 1), rem.eq(rem - 1), last.eq(rem == 2)]
                    with m.If(last):
                        goto("CRC0")
            with m.State("CRC0"):
                abandon_if_stuck()
                with m.If(take):
                    m.d.sync += crc.eq(crc_next)
                    goto("CRC1")
            with m.State("CRC1"):
                abandon_if_stuck()
                with m.If(take):
                    m.d.sync += crc.eq(crc_next)
                    goto("CRC_ZERO")
            with m.State("CRC_ZERO"):
                # the CRC's zero test into a register (``crc_zero``) while the frame waits a cycle
                goto("CHECK")
            with m.State("CHECK"):
                # the frame checked two cycles after its last byte, from registers only: neither the
                # CRC's XOR tree nor its zero test is in front of the error registers
                goto("HUNT")
                with m.If(~crc_zero):
                    error("bad_crc", f.op)
                with m.Elif(~known):
                    error("unknown_opcode", f.op)
                with m.Elif(~length_ok):
                    error("bad_length", f.op)
                with m.Else():
                    goto("DONE")
            with m.State("DONE"):
                m.d.comb += [self.o.valid.eq(1), hunting.eq(1)]
                with m.If(self.o.ready):
                    goto("HUNT")
        return m


class FrameSender(wiring.Component):
    """Frames in (``len`` payload bytes of ``payload``, low byte first), bytes out with sync and CRC.

    The outgoing byte ``o.payload`` is a register, loaded a cycle before it is offered (while the
    byte before it leaves), and the CRC steps over it the cycle after it is loaded: in front of the
    CRC's XOR tree and of the UART's shift register there is a flip-flop, not the byte multiplexer.
    The first CRC byte waits a cycle for the last payload byte's step (one idle cycle on a byte
    stream that is always ready; a UART takes a byte every ``10 * divisor`` cycles).

    ``constant`` maps an opcode whose payload never changes (the info reply) to that payload: its
    bytes are read from a ROM (block RAM) at a counter, a byte ahead, and the frame register holds
    only ``held`` payload bytes (default ``max_payload``; on the UP5K each register bit takes a logic
    cell).
    """

    def __init__(self, *, max_payload: int, held: int | None = None, constant: dict[int, bytes] | None = None):
        held = max_payload if held is None else held
        if not (1 if constant else 0) <= held <= max_payload:
            raise ConfigError(f"held must be in {1 if constant else 0}..{max_payload}, not {held!r}")
        self.max_payload, self.held, self.constant = max_payload, held, dict(constant or {})
        super().__init__({"i": In(stream.Signature(frame_layout(max_payload))), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        f = Signal(frame_layout(self.held))
        crc = Signal(16)
        left = Signal(16)
        left_one = Signal(name="left_one")      # left == 1, decided a cycle ahead
        left_zero = Signal(name="left_zero")    # the frame has no payload
        ob, ov = self.o.payload, self.o.valid
        free = Signal()                         # ``ob`` may be loaded: empty, or leaving now
        m.d.comb += free.eq(~ov | self.o.ready)
        crc_due = Signal(name="crc_due")        # ``ob`` was loaded last cycle with a byte the CRC covers
        with m.If(ov & self.o.ready):
            m.d.sync += ov.eq(0)
        m.d.sync += crc_due.eq(0)
        with m.If(crc_due):
            m.d.sync += crc.eq(_crc_step(crc, ob))

        def load(value, nxt, *, crc_it=True, when=None):
            with m.If(free if when is None else when):
                m.d.sync += [ob.eq(value), ov.eq(1), crc_due.eq(crc_it)]
                m.next = nxt

        # the constant payloads, one after another in a ROM read a byte ahead at ``ci``
        from_const = {op: Signal(name=f"const{op}") for op in self.constant}
        from_rom = Signal(name="from_rom")
        rom_bytes, base = b"", {}
        for op, payload in self.constant.items():
            base[op], rom_bytes = len(rom_bytes), rom_bytes + payload
        rom_data = Const(0, 8)
        if rom_bytes:
            m.submodules.rom = rom = Memory(shape=8, depth=len(rom_bytes), init=list(rom_bytes),
                                            attrs={"ram_style": "block"})
            rp = rom.read_port()
            ci = Signal(range(len(rom_bytes) + 1))
            m.d.comb += [rp.addr.eq(ci), rp.en.eq(0)]      # ``en`` is 1 unless driven
            rom_data = rp.data
            start = 0
            for op, flag in from_const.items():
                start = start | Mux(flag, base[op], 0)

        with m.FSM(name="sender"):
            with m.State("IDLE"):
                # the frame register loads in every idle cycle (the frame taken is the last load), so
                # the offered ``valid`` reaches only the state, not the registers' enables
                m.d.comb += self.i.ready.eq(1)
                i = self.i.payload
                m.d.sync += [f.op.eq(i.op), f.seq.eq(i.seq), f.len.eq(i.len), f.payload.eq(i.payload[:len(f.payload)]),
                             crc.eq(0xFFFF), left.eq(i.len), left_one.eq(i.len == 1), left_zero.eq(i.len == 0)]
                m.d.sync += [flag.eq(i.op == op) for op, flag in from_const.items()]
                m.d.sync += from_rom.eq(Cat(*(i.op == op for op in self.constant)).any() if self.constant else 0)
                with m.If(self.i.valid):
                    m.next = "SYNC0"
            with m.State("SYNC0"):
                if rom_bytes:
                    m.d.sync += ci.eq(start)
                load(SYNC[0], "SYNC1", crc_it=False)
            with m.State("SYNC1"):
                if rom_bytes:           # the first constant byte, read while the header leaves
                    with m.If(free):
                        m.d.comb += rp.en.eq(1)
                        m.d.sync += ci.eq(ci + 1)
                load(SYNC[1], "OP", crc_it=False)
            with m.State("OP"):
                load(f.op, "SEQ")
            with m.State("SEQ"):
                load(f.seq, "LEN0")
            with m.State("LEN0"):
                load(f.len[:8], "LEN1")
            with m.State("LEN1"):
                load(f.len[8:], "PAYLOAD")
                with m.If(free & left_zero):
                    m.next = "CRC0"
            with m.State("PAYLOAD"):
                load(Mux(from_rom, rom_data, f.payload[:8]), "PAYLOAD")
                with m.If(free):
                    m.d.sync += [f.payload.eq(f.payload >> 8), left.eq(left - 1), left_one.eq(left == 2)]
                    if rom_bytes:
                        m.d.comb += rp.en.eq(1)
                        m.d.sync += ci.eq(ci + 1)
                    with m.If(left_one):
                        m.next = "CRC0"
            with m.State("CRC0"):
                # after the last payload byte's CRC step (``crc_due`` low)
                load(crc[8:], "CRC1", crc_it=False, when=free & ~crc_due)
            with m.State("CRC1"):
                load(crc[:8], "IDLE", crc_it=False)
        return m


class LinkControl(wiring.Component):
    """Sequence numbers, acks, error replies, reset and info between the parsed frames and the payload.

    A sequenced frame is accepted (``data``, ack) only if its ``seq`` is the expected one; an older one
    (a duplicate) is acked again without being executed, a newer one (a frame was lost) is dropped and
    answered once with ``out_of_sequence`` until the expected frame arrives. ``reset`` and ``info`` are
    handled even while ``data`` waits for the payload, so a reset reaches a stalled payload. A frame
    is taken from its second offered cycle (the sequence compare is registered); ``soft_reset`` is a
    flip-flop, high the cycle after a reset frame is taken, when the link's own state is reset too.
    """

    def __init__(self, *, max_payload: int, result_bytes: int, info: bytes, data_bytes: int | None = None):
        if result_bytes > max_payload or len(info) > max_payload:
            raise ConfigError("max_payload must hold the result and info payloads")
        data_bytes = max_payload if data_bytes is None else data_bytes
        if not 0 < data_bytes <= max_payload:
            raise ConfigError(f"data_bytes must be in 1..{max_payload}, not {data_bytes!r}")
        self.max_payload, self.result_bytes, self.info, self.data_bytes = max_payload, result_bytes, info, data_bytes
        layout = frame_layout(max_payload)
        super().__init__({
            "rx": In(stream.Signature(layout)),
            "rd_addr": Out(range(max_payload)), "rd_data": In(8),
            "rx_err_valid": In(1), "rx_err_code": In(4), "rx_err_detail": In(8),
            "framing_error": In(1), "overflow": In(1), "rejected": In(1), "not_ready": In(1),
            "data": Out(stream.Signature(layout)),
            "result": In(stream.Signature(8 * result_bytes)),
            "tx": Out(stream.Signature(layout)),
            "soft_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx = self.rx.payload
        expected = Signal(8)
        nak_sent = Signal()
        result_seq = Signal(8)
        ack_pend, info_pend, reset_pend = Signal(name="ack_pend"), Signal(name="info_pend"), Signal(name="reset_pend")
        codes = sorted(ERRORS.values())
        pend = {c: Signal(name=f"err{c}_pend") for c in codes}
        detail = {c: Signal(8, name=f"err{c}_detail") for c in codes}
        rejected_q = Signal()

        sequenced = Signal()
        with m.Switch(rx.op), m.Case(*(OPCODES[n] for n in SEQUENCED)):
            m.d.comb += sequenced.eq(1)
        diff = Signal(8)
        m.d.comb += diff.eq(rx.seq - expected)
        # The sequence compare is registered and a frame taken from its second offered cycle (the
        # parser holds it; ``expected`` changes only when one is taken), so the data register's
        # enable and ``ready`` come from flip-flops, not through the subtraction.
        seen = Signal()         # rx.valid last cycle without a handshake: the compares below are this frame's
        in_order, behind = Signal(name="in_order"), Signal(name="behind")
        is_reset, is_info = Signal(name="is_reset"), Signal(name="is_info")      # the opcode, decoded as registers
        m.d.sync += [seen.eq(self.rx.valid & ~self.rx.ready), in_order.eq(sequenced & (diff == 0)),
                     behind.eq(diff[7]), is_reset.eq(rx.op == OPCODES["reset"]), is_info.eq(rx.op == OPCODES["info"])]
        # An in-order frame's payload is copied from the parser's RAM into ``data`` a byte a cycle, last
        # byte first (each shifted in at the bottom, so byte 0 ends there; bytes past ``len`` are stale,
        # as they were in the parser), then the frame is taken; the parser holds it meanwhile.
        P = self.data_bytes
        copying = Signal()
        togo = Signal(range(P + 1))         # bytes not yet read
        togo_zero = Signal(name="togo_zero")    # togo == 0, a register decided a cycle ahead
        shifting = Signal()                 # the byte read last cycle arrives: shift it in
        copied = copying & togo_zero
        m.d.comb += self.rd_addr.eq(togo - 1)
        with m.If(self.rx.valid & seen & in_order & ~self.data.valid & ~copying):
            m.d.sync += [copying.eq(1), togo.eq(rx.len), togo_zero.eq(rx.len == 0)]
        with m.If(copying & ~togo_zero):
            m.d.sync += [togo.eq(togo - 1), togo_zero.eq(togo == 1)]
        m.d.sync += shifting.eq(copying & ~togo_zero)
        body = self.data.payload.payload[:8 * P]
        with m.If(shifting & ~self.data.valid):
            m.d.sync += body.eq(Cat(self.rd_data, body[:-8]))
        m.d.comb += self.rx.ready.eq(seen & (~in_order | (copied & ~self.data.valid)))

        # ---------------------------------------------------------------- replies (priority order)
        # The reply is chosen a cycle ahead: ``grant`` (one-hot, priority order) is decided from the
        # pending flags' registers, so ``tx.valid``, the payload select and the clear of the flag
        # taken are a LUT or two from registers instead of the priority chain over every flag. A take
        # leaves one cycle without a grant (the flags are read again); each reply leaves a cycle later.
        tx = self.tx.payload
        replies = ([(reset_pend, REPLIES["reset_done"], 0, None)]
                   + [(pend[c], REPLIES["error"], 2, Cat(Const(c, 8), detail[c])) for c in codes]
                   + [(ack_pend, REPLIES["ack"], 0, None),
                      (info_pend, REPLIES["info"], len(self.info), Const(int.from_bytes(self.info, "little"),
                                                                         8 * len(self.info)))])
        grant = Signal(len(replies) + 1, name="grant")      # the last bit: a result
        take = self.tx.valid & self.tx.ready
        higher = Const(0, 1)
        for i, (flag, _, _, _) in enumerate(replies):
            m.d.sync += grant[i].eq(flag & ~higher & ~take)
            higher = higher | flag
        m.d.sync += grant[-1].eq(self.result.valid & ~higher & ~take)
        is_result = grant[-1]
        op, length, payload = 0, 0, 0
        for i, (flag, code, n, value) in enumerate(replies):
            op, length = op | Mux(grant[i], code, 0), length | Mux(grant[i], n, 0)
            if value is not None:
                payload = payload | Mux(grant[i], value, 0)
            with m.If(grant[i] & self.tx.ready):
                m.d.sync += flag.eq(0)
        op, length = op | Mux(is_result, REPLIES["result"], 0), length | Mux(is_result, self.result_bytes, 0)
        payload = payload | Mux(is_result, self.result.payload, 0)
        m.d.comb += [self.tx.valid.eq(grant[:-1].any() | (is_result & self.result.valid)),
                     self.result.ready.eq(is_result & self.tx.ready),
                     tx.op.eq(op), tx.len.eq(length), tx.seq.eq(Mux(is_result, result_seq, expected)),
                     tx.payload.eq(payload)]
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += result_seq.eq(result_seq + 1)

        # ---------------------------------------------------------------- events (set after clears: set wins)
        def raise_error(name, value):
            m.d.sync += [pend[ERRORS[name]].eq(1), detail[ERRORS[name]].eq(value)]

        with m.If(self.rx_err_valid):
            for name, carried in FrameParser.ERROR_DETAIL.items():      # the codes a parser reports
                c = ERRORS[name]
                with m.If(self.rx_err_code == c):
                    m.d.sync += [pend[c].eq(1), detail[c].eq(self.rx_err_detail if carried else 0)]
        with m.If(self.framing_error):
            raise_error("rx_framing", 0)
        with m.If(self.overflow):
            raise_error("rx_overflow", 0)
        m.d.sync += rejected_q.eq(self.rejected)
        with m.If(self.rejected & ~rejected_q):
            raise_error("rejected", 0)
        with m.If(self.not_ready):
            raise_error("not_ready", 0)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        with m.If(self.rx.valid & self.rx.ready):
            with m.If(is_reset):
                # the reset itself is the next cycle's (``soft_reset`` from a flip-flop: it fans out to
                # every register of the payload); the link's own state is reset in that cycle too
                m.d.sync += [expected.eq(rx.seq + 1), self.soft_reset.eq(1)]
            with m.Elif(is_info):
                m.d.sync += info_pend.eq(1)
            with m.Elif(in_order):
                d = self.data.payload
                m.d.sync += [d.op.eq(rx.op), d.seq.eq(rx.seq), d.len.eq(rx.len), self.data.valid.eq(1),
                             expected.eq(expected + 1), ack_pend.eq(1), nak_sent.eq(0), copying.eq(0)]
            with m.Elif(behind):                # behind: a duplicate, already executed
                m.d.sync += ack_pend.eq(1)
            with m.Elif(~nak_sent):             # ahead: something was lost
                raise_error("out_of_sequence", rx.seq)
                m.d.sync += nak_sent.eq(1)
        with m.If(self.soft_reset):             # last: the reset's clears win over this cycle's events
            m.d.sync += [self.soft_reset.eq(0), self.data.valid.eq(0), nak_sent.eq(0), result_seq.eq(0), copying.eq(0),
                         reset_pend.eq(1), ack_pend.eq(0), rejected_q.eq(0), grant.eq(0)]
            m.d.sync += [p.eq(0) for p in pend.values()]
        return m


class HostLink(wiring.Component):
    """UART, receive FIFO, parser, control and sender: the whole link around a payload.

    ``lengths`` maps each sequenced opcode to its payload bytes (its largest, for those in ``units``:
    ``FrameParser``); ``result_bytes`` is the payload of a result; ``info`` the info frame payload.
    ``divisor`` is clock cycles per UART bit; ``timeout`` the
    idle cycles after which a partial frame is abandoned. ``tx_hold`` pauses the transmitter (the
    tests' stalled output consumer; tied low on a board).
    """

    def __init__(self, *, lengths: dict[str, int], result_bytes: int, info: bytes, divisor: int,
                 fifo_depth: int, timeout: int, units: dict[str, int] | None = None, uart: bool = True):
        self.op_lengths = {OPCODES[name]: n for name, n in lengths.items()}
        self.op_units = {OPCODES[name]: u for name, u in (units or {}).items()}
        self.op_lengths.update({OPCODES["reset"]: 0, OPCODES["info"]: 0})
        self.max_payload = max(*self.op_lengths.values(), result_bytes, len(info), 2)
        self.result_bytes, self.info = result_bytes, info
        self.divisor, self.fifo_depth, self.timeout = divisor, fifo_depth, timeout
        self.uart = uart
        layout = frame_layout(self.max_payload)
        # uart=False (simulation only): the bytes enter and leave as streams, one a cycle, so a slow
        # payload's simulation (the network engine's) is not spent on 10 * divisor cycles per byte
        pins = ({"rx": In(1, init=1), "tx": Out(1, init=1)} if uart else
                {"rx_byte": In(stream.Signature(8)), "tx_byte": Out(stream.Signature(8))})
        super().__init__({**pins, "tx_hold": In(1),
                          "data": Out(stream.Signature(layout)), "result": In(stream.Signature(8 * result_bytes)),
                          "rejected": In(1), "not_ready": In(1), "soft_reset": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = ReceiveFifo(width=8, depth=self.fifo_depth)
        m.submodules.control = control = LinkControl(max_payload=self.max_payload, result_bytes=self.result_bytes,
                                                     info=self.info, data_bytes=max(self.op_lengths.values()))
        if self.uart:
            m.submodules.urx = urx = UARTRx(divisor=self.divisor)
            m.submodules.utx = utx = UARTTx(divisor=self.divisor)
            m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.ready.eq(fifo.w_rdy),
                         fifo.w_data.eq(urx.data), fifo.w_en.eq(urx.valid),
                         control.framing_error.eq(urx.frame_error), control.overflow.eq(urx.overflow)]
            tx_in = utx.i
        else:
            overflow = self.rx_byte.valid & ~fifo.w_rdy         # as the UART: a byte with the FIFO full is lost
            m.d.comb += [fifo.w_data.eq(self.rx_byte.payload), fifo.w_en.eq(self.rx_byte.valid),
                         self.rx_byte.ready.eq(1), control.overflow.eq(overflow)]
            tx_in = self.tx_byte
        m.submodules.parser = parser = FrameParser(lengths=self.op_lengths, timeout=self.timeout,
                                                     max_payload=self.max_payload, units=self.op_units)
        # The info reply's payload is a constant: the sender's register holds only the largest
        # other payload (a result, or an error's two bytes).
        m.submodules.sender = sender = FrameSender(max_payload=self.max_payload, held=max(self.result_bytes, 2),
                                                   constant={REPLIES["info"]: self.info})
        m.d.comb += [parser.i.payload.eq(fifo.r_data), parser.i.valid.eq(fifo.r_rdy), fifo.r_en.eq(parser.i.ready),
                     control.rx_err_valid.eq(parser.err_valid), control.rx_err_code.eq(parser.err_code),
                     control.rx_err_detail.eq(parser.err_detail),
                     parser.rd_addr.eq(control.rd_addr), control.rd_data.eq(parser.rd_data),
                     control.rejected.eq(self.rejected), control.not_ready.eq(self.not_ready),
                     self.soft_reset.eq(control.soft_reset),
                     tx_in.payload.eq(sender.o.payload), tx_in.valid.eq(sender.o.valid & ~self.tx_hold),
                     sender.o.ready.eq(tx_in.ready & ~self.tx_hold)]
        wiring.connect(m, parser.o, control.rx)
        wiring.connect(m, control.tx, sender.i)
        wiring.connect(m, wiring.flipped(self.result), control.result)
        wiring.connect(m, control.data, wiring.flipped(self.data))
        return m
