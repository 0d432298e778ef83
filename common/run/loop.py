"""The host loop: run the compiled chunks one after another and hand each result to the callbacks that act on it
(common.run.callbacks), as Brax's trainers report through a callback. Nothing else happens between chunks."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from common.core import devices
from common.core.trainer import Trainer
from common.run.callbacks import ChunkResult


def run_chunks(trainer: Trainer, state, first_chunk: int, num_chunks: int,
               callbacks: list[Callable[[ChunkResult, object], None]]):
    """Chunks first_chunk … num_chunks (numbered from 1); returns the final train state."""
    steps_per_chunk = trainer.env_steps_per_chunk
    for index in range(first_chunk, num_chunks + 1):
        began = time.perf_counter()
        state, metrics = trainer.chunk(state)
        metrics = {name: np.atleast_1d(values) for name, values in devices.to_host(metrics).items()}  # [seeds]
        result = ChunkResult(index=index, step=index * steps_per_chunk, previous_step=(index - 1) * steps_per_chunk,
                             last=index == num_chunks, metrics=metrics, seconds=time.perf_counter() - began,
                             postfix={})
        for callback in callbacks:
            callback(result, state)
    return state
