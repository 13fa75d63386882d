"""Host side of the network board top (``qhw.fpga.network_top``): load a compiled program once, then
run each inference's engine segments over a ``BoardLink``.

The streams are the engine's own (``qhw.engine.load``: ``load_words``, ``input_beats``,
``output_tensors``), packed ``frame_bytes`` (the info frame's) to a frame, the last frame of a
stream short. Recovery is ``BoardLink``'s: go-back-N resends inside the link; a lost or
out-of-order result restarts the segment after a reset frame. The reset keeps a loaded model
(``NetworkBoardTop``), so the program is sent again only if no inference has completed since it
was sent (a reset may have cut its load short).
"""

from __future__ import annotations

import numpy as np

from ..engine.load import input_beats, load_words, output_tensors
from ..engine.program import Program
from .host import BoardLink, LinkError, _Restart

__all__ = ["EngineSession", "frames", "infer"]


def frames(units: list[bytes], frame_bytes: int) -> list[bytes]:
    """Units (load words or input beats) packed into payloads of at most ``frame_bytes``, in order."""
    per = max(1, frame_bytes // len(units[0])) if units else 1
    return [b"".join(units[i:i + per]) for i in range(0, len(units), per)]


class EngineSession:
    """``program`` on the network board top behind ``link`` (a ``BoardLink`` whose ``top`` is network).

    A program the board's engine cannot run (by its info frame: another array or rounding, memories too
    small, a unit or pool rule not built) is refused in one line before anything is loaded
    (``qhw.engine.compiler.check_program``)."""

    def __init__(self, link: BoardLink, program: Program):
        from ..engine.compiler import check_program
        from ..errors import ConfigError
        if link.top != "network":
            raise LinkError(f"{link.name}: the board runs the {link.top} board top, not the network engine")
        try:
            check_program(program, link.config, source=f"{link.name}: the board's engine")
        except ConfigError as e:
            raise LinkError(str(e)) from None
        self.link, self.program = link, program
        self.rows = program.rows
        self.frame_bytes = link.info["frame_bytes"]
        self.load_payloads = frames([w.to_bytes(4, "little") for w in load_words(program)], self.frame_bytes)
        self.confirmed = False          # an inference completed since the last load: the model is in
        self.loads = 0

    def _stream(self, op: str, payloads: list[bytes]) -> None:
        for p in payloads:
            self.link._send(op, p)

    def load(self, *, wait: bool = True) -> None:
        """Send the program's load frames; ``wait``: return once every one is acknowledged (else the
        first image's frames may follow at once: the board holds input until the load has finished)."""
        link = self.link
        self._stream("load", self.load_payloads)
        while wait and link._unacked:
            link._pump()
        self.loads += 1
        self.confirmed = False

    def run_segment(self, segment: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One segment of one inference: input codes by tensor name (batch of 1 first) to its output
        codes by tensor name (batch axis added)."""
        from ..sim.network import output_streams
        link, R = self.link, self.rows
        beats = input_beats(self.program, {k: np.asarray(v)[0] for k, v in inputs.items()}, segment)
        payloads = frames([int(b).to_bytes(R, "little") for b in beats], self.frame_bytes)
        tensors = output_streams(self.program, segment)
        n_out = sum(n for *_, n in tensors)
        start = link._now()
        for _ in range(link.retries + 1):
            link._results = []
            try:
                self._stream("input", payloads)
                while len(link._results) < n_out or link._unacked:
                    link._pump()
            except _Restart as e:
                link.recovered += 1
                link.reset()
                last = e
                if not self.confirmed:
                    self.load()
                continue
            got = link._results[:n_out]
            lasts = [r >> 8 * R & 1 for r in got]
            want = [int(k == n - 1) for *_, n in tensors for k in range(n)]
            if lasts != want:
                raise LinkError(f"{link.name}: the board marked 'last' on output beats "
                                f"{[k for k, v in enumerate(lasts) if v]}, the program's outputs end on "
                                f"{[k for k, v in enumerate(want) if v]}")
            self.confirmed = True
            data = [r & ((1 << 8 * R) - 1) for r in got]
            return {k: v[None] for k, v in output_tensors(self.program, data, segment).items()}
        raise LinkError(f"{link.name}: an inference failed {link.retries + 1} times in a row in "
                        f"{link._elapsed(start)} (last: {last}) (link too noisy?)")


def infer(session: EngineSession, graph, x: np.ndarray) -> np.ndarray:
    """Each sample of ``x`` through ``qhw.engine.run.segment_steps`` with the program's segments run on
    the board (``session``) and the host's parts between them; the first output, samples stacked."""
    from ..engine.run import segment_steps

    ys = []
    for i in range(x.shape[0]):
        gen = segment_steps(session.program, graph, x[i:i + 1])
        try:
            calls = next(gen)
            while True:
                calls = gen.send([session.run_segment(c.segment, c.inputs) for c in calls])
        except StopIteration as stop:
            ys.append(stop.value[0][0])
    return np.concatenate(ys)
