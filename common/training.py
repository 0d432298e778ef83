"""The harness around an algorithm: the compiled chunk, seeds, and the host loop.

An algorithm (flowrl_jax.py, sac_jax.py, or any other) meets the harness through common.contract: its config
dataclass and `make(config, obs_size, action_size) -> Algorithm`; the envs are `VectorEnv`s. The harness owns
everything else: the envs, the replay buffer and the batches drawn from it (as the algorithm's `recent_share` asks),
and the train state that holds them with the algorithm's state (`TrainState.learner`).

A chunk is ONE jitted call that scans over iterations of {act → step all E envs → store E transitions → U updates},
with the train state donated so the replay buffer is updated in place. The envs are Playground's MJX envs
(common.envs) or dm_control/Gymnasium envs that the chunk steps on the host through a callback (common.host_envs):
the same interface, and a checkpoint captures either. The host loop (`train`) runs chunks and does all host work
(metrics, evaluation, progress, checks, checkpoints) between them.

`--num-seeds S` trains S independent seeds in lockstep in one program: `over_seeds` vmaps the trainer over a leading
seed axis of the train state, and the host loop logs one row per seed.
"""

import dataclasses
import signal
import sys
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from common import buffer as replay
from common import checkpoint, devices, policy_export, processes, resume, stopping, video
from common.cli import RunArgs, parse_video_size
from common.contract import Algorithm, MakeAlgorithm, VectorEnv
from common.envs import BatchedEnv
from common.evaluation import make_evaluator
from common.host_envs import HostBatchedEnv
from common.logger import QuietLogger, RunLogger, make_run_dir
from common.resources import check_memory, format_bytes, tree_bytes
from common.run_lock import RunLocked, lock_run_dir
from common.tasks import resolve_task, task_sizes


class TrainState(struct.PyTreeNode):
    learner: Any  # the algorithm's state: parameters, optimiser states, counters
    buffer: replay.ReplayBuffer
    env: Any  # the envs' state: common.envs.EnvState, or common.host_envs.HostEnvState for a host backend
    key: jax.Array
    env_steps: jax.Array  # int32, all envs together


class Trainer(NamedTuple):
    agent: Algorithm    # the algorithm built for the env's sizes
    init: Callable      # key -> train state
    chunk: Callable     # state -> (state, metrics): one compiled call; the input state is donated
    evaluate: Callable  # (state, key, deterministic: bool) -> Episodes: returns and success [eval_episodes]
    update: Callable    # (state, key) -> (state, metrics): draw a batch and run one update, as the chunk does
    env_steps_per_chunk: int
    eval_env: VectorEnv | None = None
    evaluate_recorded: Callable | None = None  # as evaluate, returning (episodes, trajectory); with videos on only
    state_shardings: Any = None  # the train state's layout over several devices (see `placed`); None: one device


def make_env(name: str, backend: str, num_envs: int, physics: str = "jax", episode_length: int | None = None,
             host_threads: int = 0) -> VectorEnv:
    """The batched env for a task: BatchedEnv on Playground, HostBatchedEnv on a host backend (dm_control,
    Gymnasium). Both are VectorEnvs."""
    task = resolve_task(name, backend)
    if task.backend == "playground":
        return BatchedEnv(task.source, num_envs, physics=physics, episode_length=episode_length)
    return HostBatchedEnv(task, num_envs, episode_length=episode_length, threads=host_threads)


def to_env_bounds(env: VectorEnv, action):
    """Map a squashed action in [-1, 1] to the env's actuator range."""
    low, high = jnp.asarray(env.action_low), jnp.asarray(env.action_high)
    return low + (action + 1.0) * 0.5 * (high - low)


def empty_transition(env: VectorEnv) -> dict:
    """One unbatched transition: the replay row layout, and the batch layout that `update` takes."""
    obs = jnp.zeros(env.obs_size)
    return dict(obs=obs, action=jnp.zeros(env.action_size), reward=jnp.float32(0), next_obs=obs, mask=jnp.float32(0))


def init_replay(capacity: int, env: VectorEnv, shards: int = 1) -> replay.ReplayBuffer:
    """An empty replay; with several `shards` (data parallel), one ring of capacity / shards per shard, stacked on a
    leading shard axis."""
    if shards == 1:
        return replay.init(capacity, empty_transition(env))
    return jax.vmap(lambda _: replay.init(capacity // shards, empty_transition(env)))(jnp.arange(shards))


def add_transitions(buffer: replay.ReplayBuffer, transitions: dict, valid, shards: int = 1) -> replay.ReplayBuffer:
    """Store one step of all E envs; with several shards, shard k takes envs k·E/shards … (k+1)·E/shards − 1."""
    if shards == 1:
        return replay.add(buffer, transitions, valid=valid)
    def split(x):
        return x.reshape(shards, -1, *x.shape[1:])

    return jax.vmap(replay.add)(buffer, jax.tree.map(split, transitions), split(valid))


def sample_batch(agent: Algorithm, buffer: replay.ReplayBuffer, key, batch_size: int, shards: int = 1) -> dict:
    """A batch drawn as the algorithm asks (`recent_share`): FlowRL draws 20 % from the newest 2 048 transitions,
    SAC uniformly. With several shards (data parallel), each shard draws batch / shards rows the same way (the
    recent share from its own newest recent_window / shards rows) with its own key, split from `key`; the batch is
    the shards' draws in shard order."""
    recent_fraction, recent_window = agent.recent_share or (0.0, 1)
    if shards == 1:
        return replay.sample(buffer, key, batch_size, recent_window=recent_window, recent_fraction=recent_fraction)
    draws = jax.vmap(lambda shard, shard_key: replay.sample(
        shard, shard_key, batch_size // shards, recent_window=max(recent_window // shards, 1),
        recent_fraction=recent_fraction))(buffer, jax.random.split(key, shards))
    return jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), draws)


def make_trainer(args: RunArgs, config, make_agent: MakeAlgorithm, env: VectorEnv, eval_env: VectorEnv) -> Trainer:
    """The algorithm, built from its own `config` for `env`'s sizes, joined to the harness by the run's flags."""
    agent = make_agent(config, env.obs_size, env.action_size)
    shards = devices.replay_shards(args)

    def init(key) -> TrainState:
        key, learner_key, env_key = jax.random.split(key, 3)
        return TrainState(learner=agent.init(learner_key), buffer=init_replay(args.buffer_size, env, shards),
                          env=env.reset(env_key), key=key, env_steps=jnp.int32(0))

    def update(state: TrainState, key):
        batch_key, update_key = jax.random.split(key)
        batch = sample_batch(agent, state.buffer, batch_key, args.batch_size, shards)
        learner, metrics = agent.update(state.learner, batch, update_key)
        return state.replace(learner=learner), metrics

    chunk, env_steps_per_chunk = make_chunk(args, env, agent, update)
    evaluate_policy = make_policy_evaluator(agent, eval_env)
    # The recording evaluator exists only with videos on, so that without them no second program is compiled.
    evaluate_recorded = make_policy_evaluator(agent, eval_env, record=True) if args.video_interval else None

    def evaluate(state: TrainState, key, deterministic):
        return evaluate_policy(state.learner, key, deterministic)

    def evaluate_and_record(state: TrainState, key, deterministic):
        return evaluate_recorded(state.learner, key, deterministic)

    return Trainer(agent=agent, init=jax.jit(init), chunk=chunk, evaluate=evaluate, update=update,
                   env_steps_per_chunk=env_steps_per_chunk, eval_env=eval_env,
                   evaluate_recorded=None if evaluate_recorded is None else evaluate_and_record)


def make_policy_evaluator(agent: Algorithm, eval_env: VectorEnv, record: bool = False) -> Callable:
    """(learner, key, deterministic) -> Episodes [eval episodes] (with `record`: (episodes, trajectory), see
    common.evaluation): the run's evaluation, and `--play`'s."""

    def act_in_bounds(learner_and_mode, obs, key):
        learner, deterministic = learner_and_mode
        return to_env_bounds(eval_env, agent.act(learner, obs, key, deterministic))

    # Compiled once for both modes: the mode is a traced bool.
    evaluate_episodes = jax.jit(make_evaluator(eval_env, act_in_bounds, record))
    return lambda learner, key, deterministic: evaluate_episodes((learner, jnp.asarray(deterministic, bool)), key)


def make_chunk(args: RunArgs, env: VectorEnv, agent: Algorithm, update: Callable) -> tuple[Callable, int]:
    """The compiled chunk, and the env steps it covers. update(state, key) -> (state, metrics); the metrics in
    agent.policy_metric_names average over the updates that moved the policy only (agent.policy_updated)."""
    num_envs, iterations = env.num_envs, -(-args.log_interval // env.num_envs)
    shards = devices.replay_shards(args)

    def update_and_mark(state, key):
        state, metrics = update(state, key)
        return state, (metrics, agent.policy_updated(state.learner))

    def run_updates(state):
        key, update_key = jax.random.split(state.key)
        return jax.lax.scan(update_and_mark, state.replace(key=key),
                            jax.random.split(update_key, args.updates_per_iteration))

    def skip_updates(state):
        metric_shapes = jax.eval_shape(lambda state: run_updates(state)[1], state)
        return state, jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), metric_shapes)

    def iteration(state, _):
        key, policy_key, random_key = jax.random.split(state.key, 3)
        obs = state.env.obs
        state = state.replace(learner=agent.observe(state.learner, obs))  # every observation the policy meets, once
        action = jnp.where(
            state.env_steps < args.start_steps,
            jax.random.uniform(random_key, (num_envs, env.action_size), minval=-1.0, maxval=1.0),
            agent.act(state.learner, obs, policy_key),
        )
        env_state, step = env.step(state.env, to_env_bounds(env, action))
        # The mask cuts the bootstrap only on true termination; a time limit still bootstraps from the true s'.
        transition = dict(obs=obs, action=action, reward=step.reward, next_obs=step.next_obs,
                          mask=1.0 - step.terminated.astype(jnp.float32))
        # A diverged env's transition never enters the replay (the env was reset, and counted).
        state = state.replace(buffer=add_transitions(state.buffer, transition, ~step.nonfinite, shards), env=env_state,
                              key=key, env_steps=state.env_steps + num_envs)
        learning = state.env_steps >= args.start_steps
        state, metrics = jax.lax.cond(learning, run_updates, skip_updates, state)
        done = step.terminated | step.truncated
        stats = dict(episodes=done.sum(), return_sum=jnp.where(done, step.episode_return, 0.0).sum(),
                     nonfinite=step.nonfinite.sum(), learning=learning.astype(jnp.float32))
        return state, (metrics, stats)

    @partial(jax.jit, donate_argnums=0)
    def chunk(state):
        state, ((update_metrics, policy_moved), stats) = jax.lax.scan(iteration, state, None, length=iterations)
        # [iterations, U]: no updates before learning starts
        update_weight = jnp.broadcast_to(stats["learning"][:, None], (iterations, args.updates_per_iteration))
        policy_weight = update_weight * policy_moved.astype(jnp.float32)
        metrics = {}
        for name, values in update_metrics.items():
            weight = policy_weight if name in agent.policy_metric_names else update_weight
            metrics[name] = (values * weight).sum() / jnp.maximum(weight.sum(), 1.0)
        metrics["updates"] = stats["learning"].sum() * args.updates_per_iteration
        episodes = stats["episodes"].sum()
        metrics["train_episodes"] = episodes
        metrics["nonfinite_env_resets"] = stats["nonfinite"].sum()
        metrics["train_return"] = jnp.where(episodes > 0, stats["return_sum"].sum() / jnp.maximum(episodes, 1), jnp.nan)
        metrics["params_finite"] = jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(state.learner)
                                                      if jnp.issubdtype(x.dtype, jnp.floating)]))
        return state, metrics

    return chunk, iterations * num_envs


def seed_axes(state: TrainState, agent: Algorithm):
    """vmap axes of a train state over seeds. The step counters have none (the env steps, and the learner's
    `lockstep_fields`): seeds run in lockstep, and an unbatched counter keeps the conds on it (learning started,
    policy delay) real conds under vmap instead of selects that compute both branches."""
    axes = jax.tree.map(lambda _: 0, state)
    return axes.replace(env_steps=None, learner=axes.learner.replace(**{name: None for name in agent.lockstep_fields}))


def over_seeds(trainer: Trainer, num_seeds: int) -> Trainer:
    """The trainer for `num_seeds` independent seeds in one program: init and evaluate take one key per seed, and
    evaluate returns Episodes of [seeds, episodes]. Several seeds: chunk and evaluate vmap over the leading seed axis of
    the train state (see seed_axes), and the chunk metrics carry that axis. One seed: no axis is added, so the compiled
    program and the checkpoint layout are exactly the single-seed ones."""
    recorded = trainer.evaluate_recorded
    if num_seeds == 1:
        def record_one(state, keys, deterministic):
            return jax.tree.map(lambda x: x[None], recorded(state, keys[0], deterministic))

        def evaluate_one(state, keys, deterministic):
            return jax.tree.map(lambda x: x[None], trainer.evaluate(state, keys[0], deterministic))

        return trainer._replace(init=lambda keys: trainer.init(keys[0]), evaluate=evaluate_one,
                                evaluate_recorded=None if recorded is None else record_one)
    axes = seed_axes(jax.eval_shape(trainer.init, jax.random.key(0)), trainer.agent)
    return trainer._replace(
        init=jax.jit(jax.vmap(trainer.init, out_axes=axes)),
        chunk=jax.jit(jax.vmap(trainer.chunk, in_axes=(axes,), out_axes=(axes, 0)), donate_argnums=0),
        evaluate=jax.jit(jax.vmap(trainer.evaluate, in_axes=(axes, 0, None))),
        evaluate_recorded=None if recorded is None else jax.jit(jax.vmap(recorded, in_axes=(axes, 0, None))),
    )


def split_leaves(template: TrainState, agent: Algorithm, mode: str):
    """Which leaves of the train state a placement splits along their leading axis: with `seeds`, every leaf that
    has a seed axis; with `data`, the envs' state and the replay shards (parameters, optimiser states, key and
    counters replicated)."""
    if mode == "seeds":
        return jax.tree.map(lambda axis: axis == 0, seed_axes(template, agent), is_leaf=lambda axis: axis is None)
    split, whole = (jax.tree.map(lambda _: value, template) for value in (True, False))
    return whole.replace(env=split.env, buffer=split.buffer)


def placed(trainer: Trainer, placement: devices.Placement, template: TrainState) -> Trainer:
    """The trainer (over_seeds') with the train state laid out over the placement's devices: init, chunk and
    evaluate are compiled with that layout in and out (metrics and returns replicated, so every process reads
    them), and XLA partitions each program; with several processes, a program's first run waits until every
    process has compiled it (common.processes). One device: the trainer unchanged."""
    if placement.mesh is None:
        return trainer
    shardings = placement.state_shardings(split_leaves(template, trainer.agent, placement.mode))
    replicated = placement.replicated

    def compiled(function, **layout):
        return processes.compiled_everywhere(jax.jit(function, **layout))

    def returning_replicated(evaluate):
        return None if evaluate is None else compiled(evaluate, out_shardings=replicated)

    return trainer._replace(
        init=compiled(trainer.init, out_shardings=shardings),
        chunk=compiled(trainer.chunk, in_shardings=(shardings,), out_shardings=(shardings, replicated),
                       donate_argnums=0),
        evaluate=returning_replicated(trainer.evaluate), evaluate_recorded=returning_replicated(
            trainer.evaluate_recorded), state_shardings=shardings)


def seed_keys(first_seed: int, num_seeds: int) -> tuple[jax.Array, jax.Array]:
    """(init keys, eval keys), one per seed: seed k's keys are those of a single run with `--seed k`."""
    keys = [jax.random.split(jax.random.key(seed)) for seed in range(first_seed, first_seed + num_seeds)]
    return jnp.stack([k[0] for k in keys]), jnp.stack([k[1] for k in keys])


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


def crossed(step: int, previous_step: int, interval: int) -> bool:
    return step // interval > previous_step // interval



# Exit status of a run whose checkpoint could not be written (BSD's EX_IOERR): the last good one is named.
EXIT_WRITE_FAILED = 74


def run(flags, make_agent: MakeAlgorithm, algo: str, policy_fields: tuple[str, ...] = ()) -> None:
    """Train `algo` with a script's parsed flags (cli.script_args) on its env (see `train`). A resumed run's
    checkpoint is read, verified and locked before any env is built."""
    args, config = flags.split()
    resumed = open_resumed_run(args) if args.resume else None
    if processes.is_main():
        print(opening_line(args, algo), flush=True)
    env, eval_env = (make_env(args.env, args.backend, num_envs, physics=args.physics,
                              episode_length=args.episode_length, host_threads=args.host_threads)
                     for num_envs in (args.num_envs, args.eval_episodes))
    train(make_trainer(args, config, make_agent, env, eval_env), args, algo, env, resumed, policy_fields,
          devices.Placement.of(args))


def opening_line(args: RunArgs, algo: str) -> str:
    """What the run is, said before the envs are built (seconds on a CPU): the replay's size comes from the task
    table's sizes (obs, next obs, action, reward and mask per row, float32)."""
    task = resolve_task(args.env, args.backend)
    obs_size, action_size = task_sizes()[task.name, task.backend]
    replay = args.buffer_size * (2 * obs_size + action_size + 2) * 4 * args.num_seeds
    count, mode = devices.device_count(args), devices.mode_of(args)
    placement = {"single": "", "seeds": ", seeds split", "data": ", data parallel"}[mode]
    processes_note = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (f"{algo} on {task.name} ({task.backend}, {count} × {jax.devices()[0].device_kind}{processes_note}"
            f"{placement}): E={args.num_envs} U={args.updates_per_iteration} batch={args.batch_size} "
            f"seeds={args.num_seeds}, replay {format_bytes(replay)}; building the envs")


class ResumedRun(NamedTuple):
    run_dir: Path
    contents: checkpoint.Contents  # the checkpoint to continue from, checksum and identity verified
    lock: Any                      # held for the life of the process


def open_resumed_run(args: RunArgs) -> ResumedRun:
    """The run `--resume` names, locked for this process, with its checkpoint read and verified as the run's own;
    anything wrong exits 2 before a file of the run is touched. With several processes, process 0 alone reads the
    run (the others get its state in `start_or_resume`) and all of them exit when it refuses; the others return
    None."""
    problem = None
    if processes.is_main():
        try:
            run_dir, contents = resume.locate(args.resume)
            resume.check_belongs_to_run(run_dir, contents)  # read-only: a refused resume leaves the run as it was
            lock = lock_run_dir(run_dir)
        except (checkpoint.CheckpointError, RunLocked, ValueError) as error:
            problem = error
    if processes.any_process(problem is not None):
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return ResumedRun(run_dir, contents, lock) if processes.is_main() else None


class RunStart(NamedTuple):
    run_dir: Path
    run_id: str              # the run's identity, in config.json and in every checkpoint
    state: Any               # the resumed train state, or None for a fresh run
    step: int                # env steps already done
    checkpoint: Path | None  # the checkpoint resumed from
    lock: Any                # the run directory's lock, held for the life of the process


def replay_row_axis(args: RunArgs) -> int:
    return 1 if args.num_seeds > 1 or devices.replay_shards(args) > 1 else 0  # a leading seed or shard axis


def start_or_resume(args: RunArgs, algo: str, env: VectorEnv, template, seed_label: str,
                    resumed: ResumedRun | None, shardings=None) -> RunStart:
    """A fresh, locked run directory; or the resumed run's state, fitted to `template` (a checkpoint stores only the
    replay's filled rows), with host envs restored, and laid out by `shardings` (several devices). With several
    processes only process 0 has a run directory; it sends the resumed state to the others."""
    if not processes.is_main():
        return RunStart(None, None, *resumed_from_main(args, template, shardings), None, None)
    if not args.resume:
        run_dir = make_run_dir(args.run_root, env.name, env.backend, algo, seed_label)
        return RunStart(run_dir, uuid.uuid4().hex, None, 0, None, lock_run_dir(run_dir))
    resumed = resumed or open_resumed_run(args)
    metadata = resumed.contents.metadata
    rows = metadata.get("replay_rows")
    try:
        state = checkpoint.to_state(resumed.contents, stored_template(args, template, rows))
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    if jax.process_count() > 1:
        processes.from_main(np.array([metadata["step"], -1 if rows is None else rows], np.int64))
        processes.from_main(jax.tree.leaves(devices.host_data(state)))
    state = fitted(args, state, rows, shardings)
    env.restore(state.env)  # host envs take back their saved state; Playground's lives in the pytree
    print(f"resuming {resumed.run_dir} from {resumed.contents.path.name} (env step {metadata['step']})", flush=True)
    return RunStart(resumed.run_dir, metadata["config"]["run_id"], state, metadata["step"], resumed.contents.path,
                    resumed.lock)


def stored_template(args: RunArgs, template, rows: int | None):
    """The train state's shapes as a checkpoint stores them: the replay's first `rows` rows (all rows for a
    checkpoint that recorded none)."""
    return template if rows is None else jax.eval_shape(
        lambda state: state.replace(buffer=replay.trimmed(state.buffer, rows, replay_row_axis(args))), template)


def fitted(args: RunArgs, state, rows: int | None, shardings):
    """A stored state as the chunk takes it: the replay padded back to its capacity, laid out over the devices."""
    if rows is not None:
        capacity = args.buffer_size // devices.replay_shards(args)
        state = state.replace(buffer=replay.padded(state.buffer, capacity, replay_row_axis(args)))
    return state if shardings is None else devices.put(state, shardings)


def resumed_from_main(args: RunArgs, template, shardings) -> tuple[Any, int]:
    """On a process other than 0: (state, step) as process 0 resumed them, or (None, 0) for a fresh run."""
    if not args.resume:
        return None, 0
    step, rows = (int(value) for value in processes.from_main(np.zeros(2, np.int64)))
    rows = None if rows < 0 else rows
    stored = stored_template(args, template, rows)
    leaves = processes.from_main([np.zeros(leaf.shape, leaf.dtype) for leaf in
                                  jax.tree.leaves(devices.host_data(stored))])
    state = devices.from_host_data(stored, jax.tree.unflatten(jax.tree.structure(stored), leaves))
    return fitted(args, state, rows, shardings), step


class Checkpoints:
    """Saves the train state (host envs captured, the replay's filled rows only) into run_dir/checkpoints and
    remembers the last good one. A save that fails names that one and exits with EXIT_WRITE_FAILED."""

    def __init__(self, directory: Path | None, env: VectorEnv, metadata: dict, args: RunArgs, last: Path | None):
        """`directory` None: a process other than 0, which takes part in gathering the state and writes nothing."""
        self.directory, self.env, self.metadata, self.args, self.last = directory, env, metadata, args, last
        if directory is not None and directory.is_dir():
            for leftover in directory.glob(".checkpoint_*.tmp"):  # a save killed mid-write
                leftover.unlink(missing_ok=True)

    def save(self, state: TrainState, step: int) -> Path | None:
        """With several processes every one of them calls this (the state is gathered to each), and process 0
        writes."""
        rows = int(np.max(devices.to_host(state.buffer.size)))
        stored = state.replace(env=self.env.capture(state.env),
                               buffer=replay.trimmed(state.buffer, rows, replay_row_axis(self.args)))
        if jax.process_count() > 1:
            stored = devices.to_host(stored)
        if self.directory is None:
            return None
        try:
            self.directory.mkdir(exist_ok=True)
            self.last = checkpoint.save(self.directory, step, stored, dict(step=step, replay_rows=rows,
                                                                           **self.metadata), self.args.keep_checkpoints)
        except OSError as error:
            print(f"\nerror: could not write the checkpoint at env step {step} ({error.strerror or error}); the last "
                  f"good checkpoint is {self.last}, and metrics.csv holds every row up to step {step}",
                  file=sys.stderr, flush=True)
            raise SystemExit(EXIT_WRITE_FAILED)
        return self.last


def log_chunk(logger: RunLogger, metrics: dict, step: int, seconds: float, trainer: Trainer, seeds: list[int]):
    """One metrics row per seed, with the throughput of the whole program (every seed's env steps and updates)."""
    env_steps_per_s = trainer.env_steps_per_chunk * len(seeds) / seconds
    updates_per_s = float(np.sum(metrics["updates"])) / seconds
    for index, seed in enumerate(seeds):
        row = {name: float(values[index]) for name, values in metrics.items() if name not in ("params_finite",
                                                                                             "updates")}
        logger.log_train(step, dict(row, env_steps_per_s=env_steps_per_s, updates_per_s=updates_per_s), seed)


def eval_modes_of(eval_mode: str) -> list[str]:
    """The modes that `--eval-mode` evaluates, in order (a mode's index enters its evaluation key)."""
    return ["stochastic", "deterministic"] if eval_mode == "both" else [eval_mode]


def evaluation_key(seed_eval_key, step: int, mode_index: int):
    """Evaluation noise depends on (seed, step, mode) only, so a resumed run, and `--play`, evaluate identically."""
    return jax.random.fold_in(jax.random.fold_in(seed_eval_key, step), mode_index)


def evaluate_and_log(trainer: Trainer, state: TrainState, step: int, eval_keys, eval_modes: list[str],
                     logger: RunLogger, seeds: list[int], videos: video.EvaluationVideos | None = None,
                     film: bool = False) -> dict:
    """Evaluate every seed in each mode and log the rows; the mean returns, for the progress bar. With `film`, the
    last mode's evaluation (the deterministic one where both run) is also filmed."""
    postfix = {}
    for mode in eval_modes:
        keys = jax.vmap(lambda key: evaluation_key(key, step, eval_modes.index(mode)))(eval_keys)
        if videos is None:
            episodes = devices.to_host(trainer.evaluate(state, keys, mode == "deterministic"))
        else:
            episodes = videos.evaluate(trainer.evaluate_recorded, state, keys, mode == "deterministic", step, logger,
                                       film=film and mode == eval_modes[-1])
        means = [logger.log_eval(step, episodes.returns[index], mode, seed, episodes.success[index])["return_mean"]
                 for index, seed in enumerate(seeds)]
        postfix[f"eval_{mode[:3]}"] = f"{np.mean(means):.1f}"
    return postfix


def start_line(template, run_dir: Path) -> str:
    """Said once the envs are built, before anything compiles."""
    return f"train state {format_bytes(tree_bytes(template))}; run directory {run_dir}"


def train(trainer: Trainer, args: RunArgs, algo: str, env: VectorEnv, resumed: ResumedRun | None = None,
          policy_fields: tuple[str, ...] = (), placement: devices.Placement | None = None) -> None:
    """Run chunks until `total_steps`: evaluate every `eval_interval` env steps, checkpoint the whole train state
    every `checkpoint_interval`, and do both at the end. `--resume` continues a run exactly where its checkpoint left
    it; a first SIGINT/SIGTERM checkpoints after the current chunk and exits with 128 + the signal number
    (common.stopping). With `--num-seeds S` the seeds `seed … seed+S-1` train together, and every metrics and eval
    row names its seed. With `policy_fields`, each checkpoint gets the exported policy beside it
    (common.policy_export); with `--video-interval`, evaluations are filmed (common.video). `placement` (default:
    one device) spreads the train state over several devices (common.devices); with several processes, process 0
    alone writes the run directory (common.processes)."""
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    seed_label = str(args.seed) if args.num_seeds == 1 else f"{seeds[0]}-{seeds[-1]}"
    placement = placement or devices.Placement.of(args)
    trainer = over_seeds(trainer, args.num_seeds)
    init_keys, eval_keys = seed_keys(args.seed, args.num_seeds)
    template = jax.eval_shape(trainer.init, init_keys)
    trainer = placed(trainer, placement, template)
    main = processes.is_main()
    check_memory(template, jax.local_devices()[0], "the train state (replay, networks, optimiser and env states)",
                 share=devices.device_count(args))
    start = start_or_resume(args, algo, env, template, seed_label, resumed, trainer.state_shardings)
    if main:
        print(start_line(template, start.run_dir), flush=True)
        resume.warn_if_disk_is_short(start.run_dir,
                                     checkpoint.checkpoint_bytes(template) * (args.keep_checkpoints + 1))

    steps_per_chunk = trainer.env_steps_per_chunk
    num_chunks = -(-args.total_steps // steps_per_chunk)
    config = dict(dataclasses.asdict(args), **dataclasses.asdict(trainer.agent.config), algo=algo,
                  backend=env.backend, backend_task=env.backend_task, env_steps_per_chunk=steps_per_chunk,
                  total_steps_run=num_chunks * steps_per_chunk, device=str(jax.devices()[0]),
                  jax_version=jax.__version__, run_id=start.run_id, **placement.describe())
    # Rows logged after the checkpoint (the chunks an interrupted run lost) are replaced, not duplicated.
    logger = RunLogger(start.run_dir, config, num_chunks * steps_per_chunk, use_wandb=args.wandb,
                       wandb_project=args.wandb_project, resume_step=start.step if args.resume else None,
                       num_seeds=args.num_seeds) if main else QuietLogger()
    checkpoints = Checkpoints(start.run_dir / "checkpoints" if main else None, env, dict(algo=algo, config=config),
                              args, last=start.checkpoint)
    eval_modes = eval_modes_of(args.eval_mode)
    videos = (video.EvaluationVideos(trainer.eval_env, start.run_dir, args.video_interval, args.eval_interval,
                                     parse_video_size(args.video_size)) if args.video_interval else None)
    stop = stopping.current()
    stop.saved(start.checkpoint)

    try:
        state = trainer.init(devices.put(init_keys, placement.replicated) if placement.mesh else init_keys) \
            if start.state is None else start.state
        logger.advance(start.step)
        logger.note("compiling the training step (minutes on a CPU; XLA may print a 'Very slow compile?' notice)")
        for chunk_index in range(start.step // steps_per_chunk + 1, num_chunks + 1):
            step, previous_step = chunk_index * steps_per_chunk, (chunk_index - 1) * steps_per_chunk
            last_chunk = chunk_index == num_chunks
            began = time.perf_counter()
            state, metrics = trainer.chunk(state)
            metrics = {name: np.atleast_1d(values) for name, values in devices.to_host(metrics).items()}  # [S]
            seconds = time.perf_counter() - began
            try:
                check_finite(metrics, step, seeds)
                if placement.mode == "data":
                    devices.check_replicas(state.learner, f"after the chunk ending at env step {step}")
            except (FloatingPointError, devices.ReplicasDiverged) as error:
                raise SystemExit(f"error: {error}; the run stopped; last good checkpoint: {checkpoints.last}")
            log_chunk(logger, metrics, step, seconds, trainer, seeds)
            if chunk_index == start.step // steps_per_chunk + 1:
                logger.note(f"compiled and ran the first chunk in {seconds:.0f} s", steady_from=step)
            stop.chunk_done(seconds)
            postfix = {"critic_loss": f"{np.mean(metrics['critic_loss']):.3g}"} if "critic_loss" in metrics else {}
            if crossed(step, previous_step, args.eval_interval) or last_chunk:
                film = videos is not None and videos.due(step, last_chunk)
                postfix.update(evaluate_and_log(trainer, state, step, eval_keys, eval_modes, logger, seeds, videos,
                                                film))
            logger.advance(step, postfix)
            stopping_now = processes.any_process(bool(stop.requested))  # every process stops at the same chunk
            if crossed(step, previous_step, args.checkpoint_interval) or last_chunk or stopping_now:
                if last_chunk:
                    logger.note("writing the final checkpoint")
                stop.saved(checkpoints.save(state, step))
                learner = devices.to_host(state.learner) if jax.process_count() > 1 else state.learner
                if policy_fields and main:
                    policy_export.save(checkpoints.directory, step, learner, trainer.agent, env, policy_fields,
                                       config, several_seeds=args.num_seeds > 1)
                processes.barrier("the checkpoint is written")  # the others wait for process 0 here, not in gloo
            if stopping_now and not stop.requested:
                print(f"\nstopped with the run's other processes at env step {step}", file=sys.stderr, flush=True)
                raise SystemExit(128 + signal.SIGTERM)
            if stop.requested:
                written = checkpoints.last if main else "written by process 0"
                print(f"\nstopped by {stop.requested.name} at env step {step}; checkpoint: {written}", file=sys.stderr,
                      flush=True)
                raise SystemExit(128 + stop.requested)
    finally:
        logger.close(curve_title=f"{algo} on {args.env} ({env.backend}, seed{'s' * (args.num_seeds > 1)} "
                                 f"{seed_label})")
