"""Per-call stage timings: what each step of one SDK call cost, measured where the step runs.

Stages (seconds): ``decode_image`` (image source → RGB pixels; absent for an embedded handle), ``encode`` (the image
encoder; absent on an embedding-cache hit), ``decode_masks`` (prompt encoder + mask decoder) and ``outputs``
(everything else of the call: prompt checks, upsampling, thresholding, post-processing, mask encodings).
One :class:`StageClock` belongs to one call and is handed down explicitly, so concurrent calls never mix.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

__all__ = ["STAGES", "StageClock"]

#: Every stage a call may report, in pipeline order.
STAGES = ("decode_image", "encode", "decode_masks", "outputs")


class StageClock:
    """Adds up the seconds spent in each named stage of one call; the rest of the call counts as ``outputs``."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and add it to ``name`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start

    def elapsed(self) -> float:
        """Seconds since the clock was made (the call's wall time so far)."""
        return time.perf_counter() - self._started

    def finish(self, *, outputs: bool = True) -> dict[str, float]:
        """The stages measured so far, in seconds, plus (with ``outputs``, for calls that produce masks)
        ``outputs`` = the wall time not spent in a measured stage."""
        measured = dict(self._seconds)
        if outputs:
            measured["outputs"] = max(0.0, self.elapsed() - sum(measured.values()))
        return measured
