"""Training throughput: per-epoch wall time, so the first epoch (compilation) and the steady
state are told apart, and samples per second from the steady epochs."""
from __future__ import annotations

import time
from typing import Any

import numpy as np


def epoch_timer(keras):
    """Per-epoch wall time, so compilation (in the first epoch) and steady state are told apart."""

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.total_seconds = 0.0  # the whole fit, set by its caller

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

        def throughput(self, num_train: int) -> dict[str, Any]:
            """First-epoch seconds and steady-state samples/s: the median of the later
            epochs, validation and checkpoints included (what a user waits for)."""
            steady = float(np.median(self.seconds[1:])) if len(self.seconds) > 1 else None
            return {
                "epoch_seconds": [round(t, 3) for t in self.seconds],
                "first_epoch_seconds": round(self.seconds[0], 3) if self.seconds else None,
                "steady_epoch_seconds": round(steady, 3) if steady else None,
                "samples_per_second": round(num_train / steady, 1) if steady else None,
            }

    return Timer()
