"""Progress lines of a training epoch, for logs that are not a terminal (no tqdm bar there).

Every N steps: mean loss since the last line, learning rate, speed in times
real time (audio seconds trained per wall second) and the epoch's ETA. The
ETA needs no step count, which a dynamic-bucketing sampler cannot tell in
advance: it divides the audio left in the epoch by the measured speed.
"""
from __future__ import annotations

import time
from typing import Callable, Optional


def format_eta(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class StepLog:
    """Accumulate steps of one epoch; ``step`` returns a line every ``every_n`` steps."""

    def __init__(self, epoch: int, epoch_seconds: float, every_n: int, clock: Callable[[], float] = time.time) -> None:
        self.epoch = epoch
        self.epoch_seconds = epoch_seconds
        self.every_n = max(0, int(every_n))
        self.clock = clock
        self.done_seconds = 0.0
        self._t0 = clock()
        self._audio = 0.0
        self._loss = 0.0
        self._n = 0

    def step(self, step: int, audio_seconds: float, loss: Optional[float], lr: float) -> Optional[str]:
        """Record one step (``loss`` None: a skipped batch); the log line when one is due."""
        self.done_seconds += audio_seconds
        self._audio += audio_seconds
        if loss is not None:
            self._loss += loss
            self._n += 1
        if not self.every_n or step % self.every_n:
            return None
        now = self.clock()
        wall = max(now - self._t0, 1e-9)
        speed = self._audio / wall
        left = max(self.epoch_seconds - self.done_seconds, 0.0)
        pct = 100.0 * min(self.done_seconds / self.epoch_seconds, 1.0) if self.epoch_seconds > 0 else 0.0
        loss_txt = f"{self._loss / self._n:.4g}" if self._n else "n/a"
        line = (
            f"epoch {self.epoch} step {step}: loss {loss_txt}, lr {lr:.3g}, "
            f"{speed:.1f}x real time, {pct:.0f}% of the epoch, ETA {format_eta(left / speed) if speed > 0 else '?'}"
        )
        self._t0, self._audio, self._loss, self._n = now, 0.0, 0.0, 0
        return line


class Stopwatch:
    """Wall seconds since the last ``lap`` or ``restart``: what a run adds to its ``train_seconds``,
    which a resumed run carries on (a checkpoint laps it, so time before a kill is not lost)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._t = clock()

    def restart(self) -> None:
        self._t = self.clock()

    def lap(self) -> float:
        now = self.clock()
        seconds, self._t = now - self._t, now
        return seconds
