"""A training run: the resolved flags (common.run.args) joined to an algorithm, its envs and the compiled trainer
(common.core), then the host loop (common.run.loop) with the callbacks that log, evaluate, checkpoint and stop
(common.run.callbacks).

`--num-seeds S` trains S independent seeds in lockstep in one program (common.core.layout): the host loop logs one
row per seed. With several processes, process 0 alone writes the run directory (common.run.processes).
"""

from __future__ import annotations

import dataclasses

import jax

from common.core import devices
from common.core.contract import MakeAlgorithm, VectorEnv
from common.core.trainer import Trainer, make_trainer
from common.envs.make import make_env
from common.envs.tasks import task_sizes
from common.run import processes, resume, stopping
from common.run.args import ResolvedRun
from common.run.callbacks import (Checkpoints, Evaluation, Guard, MetricsRows, Progress, SaveAndStop,
                                  policy_exporter)
from common.run.logger import QuietLogger, RunLogger
from common.run.loop import run_chunks
from common.run.resources import check_memory, format_bytes, tree_bytes


def run(run: ResolvedRun, make_agent: MakeAlgorithm, algo: str, policy_fields: tuple[str, ...] = ()) -> None:
    """Train `algo` as the resolved flags say (see `train`). A resumed run's checkpoint is read, verified and locked
    before any env is built."""
    args = run.args
    resumed = resume.open_resumed_run(args.resume) if args.resume else None
    if processes.is_main():
        print(opening_line(run, algo), flush=True)
    env, eval_env = (make_env(run.task, num_envs, physics=args.physics, episode_length=args.episode_length,
                              host_threads=args.host_threads) for num_envs in (args.num_envs, args.eval_episodes))
    train(build_trainer(run, make_agent, env, eval_env), run, algo, env, resumed, policy_fields)


def build_trainer(run: ResolvedRun, make_agent: MakeAlgorithm, env: VectorEnv, eval_env: VectorEnv) -> Trainer:
    """The algorithm, built from its config for `env`'s sizes, joined to the chunk as the flags say (one seed)."""
    agent = make_agent(run.config, env.obs_size, env.action_size)
    return make_trainer(run.spec, agent, env, eval_env, record=bool(run.args.video_interval))


def opening_line(run: ResolvedRun, algo: str) -> str:
    """What the run is, said before the envs are built (seconds on a CPU): the replay's size comes from the task
    table's sizes (obs, next obs, action, reward and mask per row, float32)."""
    args, task = run.args, run.task
    obs_size, action_size = task_sizes()[task.name, task.backend]
    replay = args.buffer_size * (2 * obs_size + action_size + 2) * 4 * args.num_seeds
    placement = {"single": "", "seeds": ", seeds split", "data": ", data parallel"}[run.layout.mode]
    processes_note = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (f"{algo} on {task.name} ({task.backend}, {run.layout.device_count} × {jax.devices()[0].device_kind}"
            f"{processes_note}{placement}): E={args.num_envs} U={args.updates_per_iteration} batch={args.batch_size} "
            f"seeds={args.num_seeds}, replay {format_bytes(replay)}; building the envs")


def train(trainer: Trainer, run: ResolvedRun, algo: str, env: VectorEnv, resumed: resume.ResumedRun | None = None,
          policy_fields: tuple[str, ...] = ()) -> None:
    """Run chunks until `total_steps`: evaluate every `eval_interval` env steps, checkpoint the whole train state
    every `checkpoint_interval`, and do both at the end. `--resume` continues a run exactly where its checkpoint left
    it; a first SIGINT/SIGTERM checkpoints after the current chunk and exits with 128 + the signal number
    (common.run.stopping). With `policy_fields`, each checkpoint gets the exported policy beside it
    (common.run.policy_export); with `--video-interval`, evaluations are filmed (common.run.video)."""
    args, layout, seeds = run.args, run.layout, run.seeds
    trainer = layout.over_seeds(trainer)
    init_keys, eval_keys = layout.seed_keys(args.seed)
    template = jax.eval_shape(trainer.init, init_keys)
    trainer = layout.placed(trainer, template, processes.compiled_everywhere)
    main = processes.is_main()
    check_memory(template, jax.local_devices()[0], "the train state (replay, networks, optimiser and env states)",
                 share=layout.device_count)
    start = resume.start_or_resume(run, algo, env, template, resumed, trainer.state_shardings)
    if main:
        print(f"train state {format_bytes(tree_bytes(template))}; run directory {start.run_dir}", flush=True)
        resume.warn_if_disk_is_short(start.run_dir, template, args.keep_checkpoints)

    steps_per_chunk = trainer.env_steps_per_chunk
    num_chunks = -(-args.total_steps // steps_per_chunk)
    config = dict(dataclasses.asdict(args), **dataclasses.asdict(trainer.agent.config), algo=algo,
                  backend=env.backend, backend_task=env.backend_task, env_steps_per_chunk=steps_per_chunk,
                  total_steps_run=num_chunks * steps_per_chunk, device=str(jax.devices()[0]),
                  jax_version=jax.__version__, run_id=start.run_id, **layout.describe())
    # Rows logged after the checkpoint (the chunks an interrupted run lost) are replaced, not duplicated.
    logger = RunLogger(start.run_dir, config, num_chunks * steps_per_chunk, use_wandb=args.wandb,
                       wandb_project=args.wandb_project, resume_step=start.step if args.resume else None,
                       num_seeds=args.num_seeds) if main else QuietLogger()
    checkpoints = Checkpoints(start.run_dir / "checkpoints" if main else None, env, dict(algo=algo, config=config),
                              layout, args.keep_checkpoints, last=start.checkpoint)
    stop = stopping.current()
    stop.saved(start.checkpoint)
    first_chunk = start.step // steps_per_chunk + 1
    export = policy_exporter(checkpoints.directory, trainer, env, policy_fields, config, layout)
    callbacks = [
        Guard(seeds, layout.mode == "data", checkpoints),
        MetricsRows(logger, steps_per_chunk, seeds, first_chunk, stop, trainer.agent.progress_metric),
        Evaluation(trainer, args, eval_keys, logger, seeds, start.run_dir),
        Progress(logger),
        SaveAndStop(checkpoints, args.checkpoint_interval, stop, logger, export),
    ]
    try:
        state = start.state
        if state is None:
            state = trainer.init(devices.put(init_keys, layout.replicated) if layout.mesh else init_keys)
        logger.advance(start.step)
        logger.note("compiling the training step (minutes on a CPU; XLA may print a 'Very slow compile?' notice)")
        run_chunks(trainer, state, first_chunk, num_chunks, callbacks)
    finally:
        logger.close(curve_title=f"{algo} on {args.env} ({env.backend}, seed{'s' * (args.num_seeds > 1)} "
                                 f"{run.seed_label})")
