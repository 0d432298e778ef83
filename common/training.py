"""The harness around an algorithm: the compiled chunk, seeds, and the host loop.

An algorithm (flowrl_jax.py, sac_jax.py) is a config dataclass and `make(config, obs_size, action_size)`, which gives
pure `init(key)`, `act(state, obs, key, deterministic)` and `update(state, batch, key)`, its resolved `config` and the
`policy_metric_names` that only a policy update computes; its state carries an `updates` counter. The harness owns
everything else: the envs, the replay buffer and the batches drawn from it, and the train state that holds them with
the algorithm's state (`TrainState.learner`).

A chunk is ONE jitted call that scans over iterations of {act → step all E envs → store E transitions → U updates},
with the train state donated so the replay buffer is updated in place. The envs are Playground's MJX envs
(common.envs) or dm_control/Gymnasium envs that the chunk steps on the host through a callback (common.host_envs):
the same interface, and a checkpoint captures either. The host loop runs chunks and does all host work (metrics,
evaluation, progress, checks) between them.

`--num-seeds S` trains S independent seeds in lockstep in one program: `over_seeds` vmaps the trainer over a leading
seed axis of the train state, and the host loop logs one row per seed.
"""

import dataclasses
import signal
import sys
import time
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from common import buffer as replay
from common import checkpoint, cli, resume
from common.envs import BatchedEnv
from common.evaluation import make_evaluator
from common.host_envs import HostBatchedEnv
from common.logger import RunLogger, make_run_dir
from common.tasks import resolve_task


class TrainState(struct.PyTreeNode):
    learner: Any  # the algorithm's state: parameters, optimiser states, its `updates` counter
    buffer: replay.ReplayBuffer
    env: Any  # the envs' state: common.envs.EnvState, or common.host_envs.HostEnvState for a host backend
    key: jax.Array
    env_steps: jax.Array  # int32, all envs together


class Trainer(NamedTuple):
    agent: Any          # the algorithm (make(config, obs_size, action_size)); agent.config is the run's config
    init: Callable      # key -> train state
    chunk: Callable     # state -> (state, metrics): one compiled call; the input state is donated
    evaluate: Callable  # (state, key, deterministic: bool) -> per-episode returns [eval_episodes]
    update: Callable    # (state, key) -> (state, metrics): draw a batch and run one update, as the chunk does
    env_steps_per_chunk: int


def make_env(name: str, backend: str, num_envs: int, physics: str = "jax", episode_length: int | None = None,
             host_threads: int = 0):
    """The batched env for a task: BatchedEnv on Playground, HostBatchedEnv on a host backend (dm_control,
    Gymnasium). Both give the same jittable reset/step interface."""
    task = resolve_task(name, backend)
    if task.backend == "playground":
        return BatchedEnv(task.source, num_envs, physics=physics, episode_length=episode_length)
    return HostBatchedEnv(task, num_envs, episode_length=episode_length, threads=host_threads)


def to_env_bounds(env: BatchedEnv, action):
    """Map a squashed action in [-1, 1] to the env's actuator range."""
    low, high = jnp.asarray(env.action_low), jnp.asarray(env.action_high)
    return low + (action + 1.0) * 0.5 * (high - low)


def empty_transition(env: BatchedEnv) -> dict:
    """One unbatched transition: the replay row layout, and the batch layout that `update` takes."""
    obs = jnp.zeros(env.obs_size)
    return dict(obs=obs, action=jnp.zeros(env.action_size), reward=jnp.float32(0), next_obs=obs, mask=jnp.float32(0))


def sample_batch(config, buffer: replay.ReplayBuffer, key, batch_size: int) -> dict:
    """A batch as the algorithm's reference draws it: FlowRL's config names a recent share (20 % from the newest
    2 048 transitions); a config without one (SAC) draws uniformly."""
    return replay.sample(buffer, key, batch_size, recent_window=getattr(config, "recent_window", 1),
                         recent_fraction=getattr(config, "recent_fraction", 0.0))


def make_trainer(args, make_agent: Callable, env: BatchedEnv, eval_env: BatchedEnv) -> Trainer:
    """The algorithm built for `env` and joined to the harness. `args` is the script's flags: the algorithm's config
    fields and the run flags (cli.script_args)."""
    agent = make_agent(args, env.obs_size, env.action_size)
    args = agent.config  # with the defaults that depend on the env filled in

    def init(key) -> TrainState:
        key, learner_key, env_key = jax.random.split(key, 3)
        return TrainState(learner=agent.init(learner_key), buffer=replay.init(args.buffer_size, empty_transition(env)),
                          env=env.reset(env_key), key=key, env_steps=jnp.int32(0))

    def update(state: TrainState, key):
        batch_key, update_key = jax.random.split(key)
        batch = sample_batch(args, state.buffer, batch_key, args.batch_size)
        learner, metrics = agent.update(state.learner, batch, update_key)
        return state.replace(learner=learner), metrics

    chunk, env_steps_per_chunk = make_chunk(args, env, agent, update)

    def act_in_bounds(learner_and_mode, obs, key):
        learner, deterministic = learner_and_mode
        return to_env_bounds(eval_env, agent.act(learner, obs, key, deterministic))

    # Compiled once for both modes: the mode is a traced bool.
    evaluate_episodes = jax.jit(make_evaluator(eval_env, act_in_bounds))

    def evaluate(state: TrainState, key, deterministic):
        return evaluate_episodes((state.learner, jnp.asarray(deterministic, bool)), key)

    return Trainer(agent=agent, init=jax.jit(init), chunk=chunk, evaluate=evaluate, update=update,
                   env_steps_per_chunk=env_steps_per_chunk)


def make_chunk(args, env: BatchedEnv, agent, update: Callable) -> tuple[Callable, int]:
    """The compiled chunk, and the env steps it covers. update(state, key) -> (state, metrics), where metrics may
    carry `policy_updated` (0 or 1) so that the metrics in agent.policy_metric_names average over policy updates
    only."""
    num_envs, iterations = env.num_envs, -(-args.log_interval // env.num_envs)

    def run_updates(state):
        key, update_key = jax.random.split(state.key)
        return jax.lax.scan(update, state.replace(key=key), jax.random.split(update_key, args.updates_per_iteration))

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
        state = state.replace(buffer=replay.add(state.buffer, transition, valid=~step.nonfinite), env=env_state,
                              key=key, env_steps=state.env_steps + num_envs)
        learning = state.env_steps >= args.start_steps
        state, metrics = jax.lax.cond(learning, run_updates, skip_updates, state)
        done = step.terminated | step.truncated
        stats = dict(episodes=done.sum(), return_sum=jnp.where(done, step.episode_return, 0.0).sum(),
                     nonfinite=step.nonfinite.sum(), learning=learning.astype(jnp.float32))
        return state, (metrics, stats)

    @partial(jax.jit, donate_argnums=0)
    def chunk(state):
        state, (update_metrics, stats) = jax.lax.scan(iteration, state, None, length=iterations)
        # [iterations, U]: no updates before learning starts
        update_weight = jnp.broadcast_to(stats["learning"][:, None], (iterations, args.updates_per_iteration))
        policy_weight = update_weight * update_metrics.pop("policy_updated", jnp.ones_like(update_weight))
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


def seed_axes(state):
    """vmap axes of a train state over seeds. The step counters have none: seeds run in lockstep, and an unbatched
    counter keeps the conds on it (learning started, policy delay) real conds under vmap instead of selects that
    compute both branches."""
    axes = jax.tree.map(lambda _: 0, state)
    return axes.replace(env_steps=None, learner=axes.learner.replace(updates=None))


def over_seeds(trainer: Trainer, num_seeds: int) -> Trainer:
    """The trainer for `num_seeds` independent seeds in one program: init and evaluate take one key per seed, and
    evaluate returns [seeds, episodes]. Several seeds: chunk and evaluate vmap over the leading seed axis of the train
    state (see seed_axes), and the chunk metrics carry that axis. One seed: no axis is added, so the compiled program
    and the checkpoint layout are exactly the single-seed ones."""
    if num_seeds == 1:
        return trainer._replace(init=lambda keys: trainer.init(keys[0]),
                                evaluate=lambda state, keys, deterministic: trainer.evaluate(state, keys[0],
                                                                                             deterministic)[None])
    axes = seed_axes(jax.eval_shape(trainer.init, jax.random.key(0)))
    return trainer._replace(
        init=jax.jit(jax.vmap(trainer.init, out_axes=axes)),
        chunk=jax.jit(jax.vmap(trainer.chunk, in_axes=(axes,), out_axes=(axes, 0)), donate_argnums=0),
        evaluate=jax.jit(jax.vmap(trainer.evaluate, in_axes=(axes, 0, None))),
    )


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


class StopRequest:
    """SIGINT/SIGTERM set a flag instead of killing the run: the loop finishes its chunk, checkpoints, then exits."""

    def __enter__(self):
        self.signal = None
        self.previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def request(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def crossed(step: int, previous_step: int, interval: int) -> bool:
    return step // interval > previous_step // interval


def main(algo: str, config_class: type, make_agent: Callable) -> None:
    """An algorithm script's command line: parse and check the flags (exit 2 before compiling), then train."""
    run(cli.parse_args(cli.script_args(config_class)), make_agent, algo)


def run(args, make_agent: Callable, algo: str) -> None:
    """Train `algo` with the script's flags `args` on its env (see `train`)."""
    env, eval_env = (make_env(args.env, args.backend, num_envs, physics=args.physics,
                              episode_length=args.episode_length, host_threads=args.host_threads)
                     for num_envs in (args.num_envs, args.eval_episodes))
    train(make_trainer(args, make_agent, env, eval_env), algo, env)


def train(trainer: Trainer, algo: str, env: BatchedEnv) -> None:
    """Run chunks until `total_steps`: evaluate every `eval_interval` env steps, checkpoint the whole train state
    every `checkpoint_interval`, and do both at the end. `--resume` continues a run exactly where its checkpoint left
    it; SIGINT/SIGTERM checkpoint after the current chunk and exit with 128 + the signal number. With `--num-seeds S`
    the seeds `seed … seed+S-1` train together, and every metrics and eval row names its seed. The flags are
    trainer.agent.config (the script's flags, with the defaults that depend on the env filled in)."""
    args = trainer.agent.config
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    seed_label = str(args.seed) if args.num_seeds == 1 else f"{seeds[0]}-{seeds[-1]}"
    trainer = over_seeds(trainer, args.num_seeds)
    init_keys, eval_keys = seed_keys(args.seed, args.num_seeds)
    template = jax.eval_shape(trainer.init, init_keys)
    if args.resume:
        try:
            run_dir, checkpoint_path = resume.locate(args.resume, template)
            state, metadata = checkpoint.load(checkpoint_path, template)
        except checkpoint.CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2)
        env.restore(state.env)  # host envs take back their saved state; Playground's lives in the pytree
        start_step = metadata["step"]
        print(f"resuming {run_dir} from {checkpoint_path.name} (env step {start_step})", flush=True)
    else:
        run_dir, checkpoint_path = make_run_dir(args.run_root, env.name, env.backend, algo, seed_label), None
        state, start_step = None, 0
    checkpoint_dir = run_dir / "checkpoints"
    resume.warn_if_disk_is_short(run_dir, checkpoint.checkpoint_bytes(template) * (args.keep_checkpoints + 1))
    num_chunks = -(-args.total_steps // trainer.env_steps_per_chunk)
    total_steps_run = num_chunks * trainer.env_steps_per_chunk
    config = dict(dataclasses.asdict(args), algo=algo, backend=env.backend, backend_task=env.backend_task,
                  env_steps_per_chunk=trainer.env_steps_per_chunk, total_steps_run=total_steps_run,
                  device=str(jax.devices()[0]), jax_version=jax.__version__)
    # Rows logged after the checkpoint (the chunks an interrupted run lost) are replaced, not duplicated.
    logger = RunLogger(run_dir, config, total_steps_run, use_wandb=args.wandb, wandb_project=args.wandb_project,
                       resume_step=start_step if args.resume else None, num_seeds=args.num_seeds)
    print(f"run directory: {run_dir}", flush=True)
    eval_modes = ["stochastic", "deterministic"] if args.eval_mode == "both" else [args.eval_mode]
    last_checkpoint = [checkpoint_path if args.resume else None]

    def save(step):
        checkpoint_dir.mkdir(exist_ok=True)
        path = checkpoint.save(checkpoint_dir, step, state.replace(env=env.capture(state.env)),
                               dict(step=step, algo=algo, config=config), args.keep_checkpoints)
        last_checkpoint[0] = path

    try:
        with StopRequest() as stop:
            state = trainer.init(init_keys) if state is None else state
            logger.advance(start_step)
            for chunk_index in range(start_step // trainer.env_steps_per_chunk + 1, num_chunks + 1):
                start = time.perf_counter()
                state, metrics = trainer.chunk(state)
                metrics = {name: np.atleast_1d(values) for name, values in jax.device_get(metrics).items()}  # [S]
                seconds = time.perf_counter() - start
                step = chunk_index * trainer.env_steps_per_chunk
                previous_step = step - trainer.env_steps_per_chunk
                try:
                    check_finite(metrics, step, seeds)
                except FloatingPointError as error:
                    raise SystemExit(f"error: {error}; the run stopped; last good checkpoint: {last_checkpoint[0]}")
                # Throughput counts every seed's env steps and updates: the program does all of them.
                env_steps_per_s = trainer.env_steps_per_chunk * args.num_seeds / seconds
                updates_per_s = float(np.sum(metrics.pop("updates"))) / seconds
                for index, seed in enumerate(seeds):
                    row = {name: float(values[index]) for name, values in metrics.items() if name != "params_finite"}
                    logger.log_train(step, dict(row, env_steps_per_s=env_steps_per_s, updates_per_s=updates_per_s),
                                     seed)
                postfix = {}
                if "critic_loss" in metrics:
                    postfix["critic_loss"] = f"{np.mean(metrics['critic_loss']):.3g}"
                if crossed(step, previous_step, args.eval_interval) or chunk_index == num_chunks:
                    for mode in eval_modes:
                        # Evaluation noise depends on (seed, step, mode) only, so a resumed run evaluates identically.
                        keys = jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, step),
                                                                       eval_modes.index(mode)))(eval_keys)
                        returns = np.asarray(trainer.evaluate(state, keys, mode == "deterministic"))
                        means = [logger.log_eval(step, returns[index], mode, seed)["return_mean"]
                                 for index, seed in enumerate(seeds)]
                        postfix[f"eval_{mode[:3]}"] = f"{np.mean(means):.1f}"
                logger.advance(step, postfix)
                if crossed(step, previous_step, args.checkpoint_interval) or chunk_index == num_chunks or stop.signal:
                    save(step)
                if stop.signal:
                    print(f"\nstopped by signal {stop.signal} at env step {step}; checkpoint: {last_checkpoint[0]}",
                          flush=True)
                    raise SystemExit(128 + stop.signal)
    finally:
        logger.close(curve_title=f"{algo} on {args.env} (seed{'s' * (args.num_seeds > 1)} {seed_label})")
