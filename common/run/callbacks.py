"""What acts on each chunk's result, in the order the host loop (common.run.loop) hands it on: the finite and
replica checks, the metrics rows, evaluation (and videos), the progress bar, and checkpoints (with the exported
policy) and the stop request. Each is a callable `(result, state) -> None`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from common.core import devices
from common.core.trainer import Trainer
from common.run import checkpoint, policy_export, processes, video
from common.run.args import RunArgs, parse_video_size
from common.run.logger import RunLogger
from common.run.resume import describe_last

# Exit status of a run whose checkpoint could not be written (BSD's EX_IOERR): the last good one is named.
EXIT_WRITE_FAILED = 74


class ChunkResult(NamedTuple):
    index: int           # the chunk's number, from 1
    step: int            # env steps done after it
    previous_step: int   # env steps done before it
    last: bool           # the run's last chunk
    metrics: dict        # name -> [seeds] host array
    seconds: float       # the chunk's wall-clock time
    postfix: dict        # what the progress bar shows beside the step; callbacks add to it

    def crossed(self, interval: int) -> bool:
        """Whether this chunk crossed a multiple of `interval` env steps."""
        return self.step // interval > self.previous_step // interval


def check_finite(metrics: dict, step: int, seeds: list[int]) -> None:
    """Stop on a NaN/Inf in any seed's loss, value or parameter (the metrics so far are already on disk)."""
    for index, seed in enumerate(seeds):
        if not metrics["params_finite"][index]:
            raise FloatingPointError(f"non-finite network parameters (seed {seed}) in the chunk ending at env step "
                                     f"{step}")
        for name, values in metrics.items():
            value = values[index]
            if name != "train_return" and not np.isfinite(value):  # train_return is NaN when no episode ended
                raise FloatingPointError(f"non-finite {name} ({value}, seed {seed}) in the chunk ending at env step "
                                         f"{step}")


class Checkpoints:
    """Saves the train state (host envs captured, the replay's filled rows only) into run_dir/checkpoints and
    remembers the last good one. A save that fails names that one and exits with EXIT_WRITE_FAILED."""

    def __init__(self, directory: Path | None, env, metadata: dict, layout, keep: int, last: Path | None):
        """`directory` None: a process other than 0, which takes part in gathering the state and writes nothing."""
        self.directory, self.env, self.metadata, self.layout, self.keep, self.last = (directory, env, metadata,
                                                                                      layout, keep, last)
        if directory is not None and directory.is_dir():
            for leftover in directory.glob(".checkpoint_*.tmp"):  # a save killed mid-write
                leftover.unlink(missing_ok=True)

    def save(self, state, step: int) -> Path | None:
        """With several processes every one of them calls this (the state is gathered to each), and process 0
        writes."""
        rows = int(np.max(devices.to_host(state.buffer.size)))
        stored = self.layout.stored(state.replace(env=self.env.capture(state.env)), rows)
        if jax.process_count() > 1:
            stored = devices.to_host(stored)
        if self.directory is None:
            return None
        try:
            self.directory.mkdir(exist_ok=True)
            self.last = checkpoint.save(self.directory, step, stored, dict(step=step, replay_rows=rows,
                                                                           **self.metadata), self.keep)
        except OSError as error:
            last = f"the last good checkpoint is {self.last}" if self.last else "no checkpoint was written before it"
            print(f"\nerror: could not write the checkpoint at env step {step} ({error.strerror or error}); {last}, "
                  f"and metrics.csv holds every row up to step {step}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_WRITE_FAILED)
        return self.last


class Guard:
    """Stops the run on a non-finite metric or parameter, or (data parallel) on replicas that drifted apart."""

    def __init__(self, seeds: list[int], check_replicas: bool, checkpoints: Checkpoints):
        self.seeds, self.check_replicas, self.checkpoints = seeds, check_replicas, checkpoints

    def __call__(self, result: ChunkResult, state) -> None:
        try:
            check_finite(result.metrics, result.step, self.seeds)
            if self.check_replicas:
                devices.check_replicas(state.learner, f"after the chunk ending at env step {result.step}")
        except (FloatingPointError, devices.ReplicasDiverged) as error:
            raise SystemExit(f"error: {error}; the run stopped; last good checkpoint: "
                             f"{describe_last(self.checkpoints.last)}")


class MetricsRows:
    """One metrics row per seed, with the throughput of the whole program (every seed's env steps and updates)."""

    def __init__(self, logger: RunLogger, env_steps_per_chunk: int, seeds: list[int], first_chunk: int, stop,
                 progress_metric: str | None):
        self.logger, self.env_steps_per_chunk, self.seeds = logger, env_steps_per_chunk, seeds
        self.first_chunk, self.stop, self.progress_metric = first_chunk, stop, progress_metric

    def __call__(self, result: ChunkResult, state) -> None:
        metrics, seconds = result.metrics, result.seconds
        env_steps_per_s = self.env_steps_per_chunk * len(self.seeds) / seconds
        updates_per_s = float(np.sum(metrics["updates"])) / seconds
        for index, seed in enumerate(self.seeds):
            row = {name: float(values[index]) for name, values in metrics.items()
                   if name not in ("params_finite", "updates")}
            self.logger.log_train(result.step, dict(row, env_steps_per_s=env_steps_per_s,
                                                    updates_per_s=updates_per_s), seed)
        if result.index == self.first_chunk:
            self.logger.note(f"compiled and ran the first chunk in {seconds:.0f} s", steady_from=result.step)
        self.stop.chunk_done(seconds)
        if self.progress_metric in metrics:
            result.postfix[self.progress_metric] = f"{np.mean(metrics[self.progress_metric]):.3g}"


def eval_modes_of(eval_mode: str) -> list[str]:
    """The modes that `--eval-mode` evaluates, in order (a mode's index enters its evaluation key)."""
    return ["stochastic", "deterministic"] if eval_mode == "both" else [eval_mode]


def evaluation_key(seed_eval_key, step: int, mode_index: int):
    """Evaluation noise depends on (seed, step, mode) only, so a resumed run, and `--play`, evaluate identically."""
    return jax.random.fold_in(jax.random.fold_in(seed_eval_key, step), mode_index)


class Evaluation:
    """Every `--eval-interval` env steps and after the last chunk: evaluate every seed in each mode and log the rows.
    With `--video-interval`, the last mode's evaluation (the deterministic one where both run) is filmed when due."""

    def __init__(self, trainer: Trainer, args: RunArgs, eval_keys, logger: RunLogger, seeds: list[int],
                 run_dir: Path | None):
        self.trainer, self.interval, self.eval_keys = trainer, args.eval_interval, eval_keys
        self.modes, self.logger, self.seeds = eval_modes_of(args.eval_mode), logger, seeds
        self.videos = video.EvaluationVideos(trainer.eval_env, run_dir, args.video_interval, args.eval_interval,
                                             parse_video_size(args.video_size)) if args.video_interval else None

    def __call__(self, result: ChunkResult, state) -> None:
        if not (result.crossed(self.interval) or result.last):
            return
        step, videos = result.step, self.videos
        film = videos is not None and videos.due(step, result.last)
        for mode in self.modes:
            keys = jax.vmap(lambda key: evaluation_key(key, step, self.modes.index(mode)))(self.eval_keys)
            deterministic = mode == "deterministic"
            if videos is None:
                episodes = devices.to_host(self.trainer.evaluate(state, keys, deterministic))
            else:
                episodes = videos.evaluate(self.trainer.evaluate_recorded, state, keys, deterministic, step,
                                           self.logger, film=film and mode == self.modes[-1])
            means = [self.logger.log_eval(step, episodes.returns[index], mode, seed,
                                          episodes.success[index])["return_mean"]
                     for index, seed in enumerate(self.seeds)]
            result.postfix[f"eval_{mode[:3]}"] = f"{np.mean(means):.1f}"


class Progress:
    def __init__(self, logger: RunLogger):
        self.logger = logger

    def __call__(self, result: ChunkResult, state) -> None:
        self.logger.advance(result.step, result.postfix)


class SaveAndStop:
    """Checkpoints every `interval` env steps, after the last chunk, and when a stop is requested (a signal to any
    process stops all of them after the same chunk), each with the exported policy beside it; then exits with
    128 + the signal where one was requested."""

    def __init__(self, checkpoints: Checkpoints, interval: int, stop, logger: RunLogger, export):
        """`export(step, learner)`: write the exported policy (None: the algorithm exports none)."""
        self.checkpoints, self.interval, self.stop, self.logger, self.export = (checkpoints, interval, stop, logger,
                                                                               export)

    def __call__(self, result: ChunkResult, state) -> None:
        step, stop = result.step, self.stop
        stopping_now = processes.any_process(bool(stop.requested))  # every process stops at the same chunk
        if result.crossed(self.interval) or result.last or stopping_now:
            if result.last:
                self.logger.note("writing the final checkpoint")
            stop.saved(self.checkpoints.save(state, step))
            # Gathered on every process (a collective), exported by process 0.
            learner = devices.to_host(state.learner) if jax.process_count() > 1 else state.learner
            if self.export is not None:
                self.export(step, learner)
            processes.barrier("the checkpoint is written")  # the others wait for process 0 here, not in gloo
        if stopping_now and not stop.requested:
            print(f"\nstopped with the run's other processes at env step {step}", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGTERM)
        if stop.requested:
            written = self.checkpoints.last if processes.is_main() else "written by process 0"
            print(f"\nstopped by {stop.requested.name} at env step {step}; checkpoint: {written}", file=sys.stderr,
                  flush=True)
            raise SystemExit(128 + stop.requested)


def policy_exporter(directory: Path | None, trainer: Trainer, env, fields: tuple[str, ...], config: dict,
                    layout):
    """`export(step, learner)` for SaveAndStop: the policy file beside each checkpoint, written by process 0."""
    if not fields or not processes.is_main():
        return None

    def export(step: int, learner) -> None:
        policy_export.save(directory, step, learner, trainer.agent, env, fields, config, layout)

    return export
