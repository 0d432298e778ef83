"""FlowRL: flow-based policy for online RL (Lv et al., NeurIPS 2025), in JAX.

The policy is a velocity field v(s, x, t); an action is tanh(x_1), where x_1 integrates dx/dt = v from noise x_0 with
midpoint steps (one `lax.scan`). The actor maximises Q through the integration while a conditional-flow-matching
loss on replay actions, weighted by how far the policy's Q falls below an IQL-style behaviour-optimal value, keeps it
close to the best behaviour seen in the buffer.

This file is the whole algorithm and imports only pip packages: copy it alone into your own code (README, "Use the
algorithm in your own code"). `make_flowrl(config, obs_size, action_size)` gives pure, jittable `init`, `act` and
`update(state, batch, key)`. The reference's layers are also written out in sac_jax.py, so that each file stands alone.
Only `main` at the bottom uses this repository's harness (common/: MJX envs, replay, the compiled chunk of
{act → step E envs → store → U updates}, logging, checkpoints).
Paper mode (the reference implementation):
`--num-envs 1 --updates-per-iteration 1 --batch-size 256 --target-rate 0.95`.
"""

import dataclasses
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct, traverse_util
from flax.typing import Dtype


@dataclasses.dataclass
class FlowRLConfig:
    """FlowRL's hyperparameters; the defaults are the reference implementation's, except ρ and the held x_0
    (`--target-rate 0.95 --x0-hold 1` restores the reference)."""

    # Runs written before a flag existed ran as its value here does (not as today's default): their resume keeps it.
    VALUES_BEFORE_FLAGS: ClassVar[dict] = {"x0_hold": 1}

    hidden_dim: int = 512
    """Width of the velocity field and of every critic."""
    flow_steps: int = 1
    """N: midpoint steps of the flow ODE from t=0 to t=1."""
    lagrange: float = 0.1
    """λ: scale of the flow-matching weight, clipped to [1e-3, 1]."""
    expectile: float = 0.9
    """τ of the expectile loss for the behaviour-optimal value V_β (reference suggests 0.8 for harder tasks)."""
    target_rate: float = 0.05
    """ρ: target ← (1-ρ)·target + ρ·online, applied every `policy_delay` updates. The reference's 0.95 (a near
    copy) makes curves dip and learns cheetah-run far more slowly; 0.05 was better on every task measured (README)."""
    policy_delay: int = 2
    """The policy and the targets move on one update in `policy_delay`, from the first on."""
    policy_loss: Literal["reference", "paper"] = "reference"
    """`reference`: mean(-Q) + mean(w)·mean(cfm); `paper`: mean(-Q + w·cfm), per-sample weights as in the paper."""
    learning_rate: float = 3e-4
    """Adam step size for every network."""
    exploration_noise: float = 0.0
    """σ of the Gaussian noise added to each collected action (clipped to [-1, 1]; evaluation never sees it). The
    reference collects with the flow's own x_0 noise alone (its uniform noise schedule is set to zero in all
    tasks)."""
    x0_hold: int = 50
    """Collect with each env's x_0 held for this many env steps before a fresh one is drawn: actions that follow one
    latent for a while, as the flow maps it in each state, wander further than independent ones on a sparse task
    (benchmarks/exploration_reach.py). 1 draws x_0 afresh every step, as the reference; evaluation never holds it."""
    max_grad_norm: float | None = None
    """Clip each gradient to this global norm before Adam (default: no clipping, as in the reference)."""
    normalize_observations: bool = False
    """Scale each observation by the running mean and std of all observations passed to `observe` (Playground's SAC
    normalises; the reference does not)."""
    gamma: float = 0.99
    """Discount."""
    recent_window: int = 2048
    """Newest transitions that the recent share of each batch is drawn from (`update` takes whatever batch it is
    given; this and `recent_fraction` say how the reference draws it: `FlowRL.recent_share`)."""
    recent_fraction: float = 0.2
    """Share of each batch drawn from the recent window (the rest is uniform over the buffer)."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of every matmul. `bfloat16` multiplies each layer's inputs and weights in bfloat16, as the
    reference's bf16 autocast on CUDA does; the parameters, optimiser states, LayerNorms, activations, losses,
    targets and the flow's state stay float32."""

    def validate(self) -> None:
        """Raise ValueError, naming the flag, for a value the algorithm cannot use."""
        if self.max_grad_norm is not None and not 0 < self.max_grad_norm < float("inf"):
            raise ValueError(f"--max-grad-norm must be a positive number, got {self.max_grad_norm}")
        for name in ("hidden_dim", "flow_steps", "policy_delay", "recent_window", "x0_hold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag(name)} must be a positive integer (≥ 1), got {getattr(self, name)}")
        for name, low, high, low_open in (("expectile", 0.0, 1.0, True), ("recent_fraction", 0.0, 1.0, False),
                                          ("target_rate", 0.0, 1.0, True), ("lagrange", 0.0, float("inf"), True),
                                          ("learning_rate", 0.0, float("inf"), True), ("gamma", 0.0, 1.0, False),
                                          ("exploration_noise", 0.0, float("inf"), False)):
            value = getattr(self, name)
            if not (low < value if low_open else low <= value) or value > high:
                raise ValueError(f"{_flag(name)} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
        if self.policy_loss not in ("reference", "paper"):
            raise ValueError(f"--policy-loss must be `reference` or `paper`, got {self.policy_loss!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--compute-dtype must be `float32` or `bfloat16`, got {self.compute_dtype!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------------------------------------------------
# Networks, with the reference's PyTorch layers: Xavier-uniform weights and zero biases in every Linear, LayerNorm
# ε = 1e-5 and the exact (erf) GELU. flax's defaults differ in all three (LeCun-normal, ε = 1e-6, tanh GELU).
# ----------------------------------------------------------------------------------------------------------------------
# --compute-dtype -> the dtype Dense multiplies in; None: its inputs' and parameters' own (float64 under x64).
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


class Dense(nn.Dense):
    """nn.Dense whose output has its input's dtype. With `dtype` bfloat16 it rounds its input, kernel and bias to
    bfloat16 and multiplies in bfloat16 (the parameters stay float32), as a Linear under torch's bf16 autocast does,
    and what follows (LayerNorm, activations, losses) takes the result in float32, as autocast runs them. Named as
    flax's, so that the parameters keep their paths (Dense_0, …)."""

    def __call__(self, inputs):
        return super().__call__(inputs).astype(inputs.dtype)


dense = partial(Dense, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros)
layer_norm = partial(nn.LayerNorm, epsilon=1e-5)


def gelu(x):
    return nn.gelu(x, approximate=False)


class CriticHead(nn.Module):
    """One value head as the reference builds Q, Q_β and V_β: Dense, then LN → Dense → LN → GELU → Dense → LN → GELU
    → Dense → LN, then Dense(1). The inputs are concatenated ((s, a) for Q, s alone for V)."""

    hidden_dim: int
    compute_dtype: Dtype | None = None  # the matmuls' dtype (COMPUTE_DTYPES)

    @nn.compact
    def __call__(self, *inputs):
        linear = partial(dense, dtype=self.compute_dtype)
        h = linear(self.hidden_dim)(jnp.concatenate(inputs, axis=-1))
        h = linear(self.hidden_dim)(layer_norm()(h))
        h = gelu(layer_norm()(h))
        h = linear(self.hidden_dim)(h)
        h = gelu(layer_norm()(h))
        h = linear(self.hidden_dim)(h)
        return linear(1)(layer_norm()(h)).squeeze(-1)


def twin_critic(hidden_dim: int, compute_dtype: Dtype | None = None) -> nn.Module:
    """Two independent CriticHeads with stacked parameters (each initialised from its own key), applied to the same
    inputs; output [2, batch]."""
    stacked = nn.vmap(CriticHead, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                      axis_size=2)
    return stacked(hidden_dim, compute_dtype)


class VelocityField(nn.Module):
    """v_θ(s, x, t): concat[s, x, t] → 2 × (Dense → LayerNorm → ELU) → Dense(action_dim)."""

    hidden_dim: int
    action_dim: int
    compute_dtype: Dtype | None = None  # the matmuls' dtype (COMPUTE_DTYPES)

    @nn.compact
    def __call__(self, obs, x, t):
        linear = partial(dense, dtype=self.compute_dtype)
        h = jnp.concatenate([obs, x, t], axis=-1)
        for _ in range(2):
            h = nn.elu(layer_norm()(linear(self.hidden_dim)(h)))
        return linear(self.action_dim)(h)


# ----------------------------------------------------------------------------------------------------------------------
# The flow policy and the losses (pure functions, unit-tested on their own)
# ----------------------------------------------------------------------------------------------------------------------
def integrate_midpoint(velocity, x0, num_steps: int):
    """x_{k+1} = x_k + h·v(x_k + h/2·v(x_k, t_k), t_k + h/2), t_k = k·h, h = 1/N: one scan, differentiable."""
    step_size = 1.0 / num_steps

    def midpoint_step(x, k):
        t = k * step_size
        x_half = x + 0.5 * step_size * velocity(x, t)
        return x + step_size * velocity(x_half, t + 0.5 * step_size), None

    x1, _ = jax.lax.scan(midpoint_step, x0, jnp.arange(num_steps, dtype=jnp.float32))
    return x1


def clipped_noise(key, shape):
    """x_0 ~ N(0, I) clipped to [-1, 1], as the reference draws it."""
    return jnp.clip(jax.random.normal(key, shape), -1.0, 1.0)


def expectile_loss(diff, expectile: float):
    """mean |τ − 1(u < 0)|·u²: with τ > 0.5, under-estimates cost more, so V tracks an upper expectile of Q."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return jnp.mean(weight * diff**2)


def flow_matching_pairs(actions, x0, t):
    """The linear CFM path from noise to a buffer action: x_t = t·a + (1−t)·x_0, target velocity a − x_0."""
    return t * actions + (1.0 - t) * x0, actions - x0


def flow_matching_weights(q_behaviour, q_policy, lagrange: float):
    """w = clip(λ·exp(g − mean g), 1e-3, 1), g = relu(Q_β − Q_π) without gradient: pull harder toward the buffer's
    best actions where the policy falls short of them."""
    gap = jax.lax.stop_gradient(jax.nn.relu(q_behaviour - q_policy))
    return jnp.clip(lagrange * jnp.exp(gap - gap.mean()), 1e-3, 1.0)


def policy_objective(q_policy, cfm_error, weights, mode: str):
    """`reference` reduces the CFM error to a scalar before weighting; `paper` weights each sample."""
    if mode == "reference":
        return jnp.mean(-q_policy) + jnp.mean(weights) * jnp.mean(cfm_error)
    return jnp.mean(-q_policy + weights * cfm_error)


def is_policy_update(update_count, policy_delay: int):
    """The policy and the targets move on updates 1, 1 + policy_delay, 1 + 2·policy_delay, … (update_count counts
    from 1): the reference tests `updates % policy_delay == 0` on a counter that starts at 0, so its first update
    moves them too."""
    return (update_count - 1) % policy_delay == 0


# ----------------------------------------------------------------------------------------------------------------------
# Observation normalisation (optional; the same lines are in both algorithm files, so that each stands alone)
# ----------------------------------------------------------------------------------------------------------------------
class ObservationStats(struct.PyTreeNode):
    """Count, mean and summed squared deviations of every observation passed to `observe`."""

    count: jax.Array  # float32 scalar
    mean: jax.Array   # [obs_size]
    m2: jax.Array     # [obs_size]

    @classmethod
    def empty(cls, obs_size: int) -> "ObservationStats":
        return cls(count=jnp.float32(0.0), mean=jnp.zeros(obs_size), m2=jnp.zeros(obs_size))

    def add(self, obs: jax.Array) -> "ObservationStats":
        """Merge a batch [..., obs_size] in, exactly (Chan et al.'s pairwise update of mean and variance)."""
        obs = obs.reshape(-1, obs.shape[-1])
        batch_count = jnp.float32(obs.shape[0])
        batch_mean = obs.mean(0)
        count = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.m2 + ((obs - batch_mean) ** 2).sum(0) + delta**2 * self.count * batch_count / count
        return ObservationStats(count=count, mean=self.mean + delta * batch_count / count, m2=m2)

    def normalise(self, obs: jax.Array) -> jax.Array:
        """(obs − mean) / √(variance + 1e-8), clipped to ±10 (as Stable-Baselines3's VecNormalize); identity
        before the first observation."""
        variance = jnp.where(self.count > 0, self.m2 / jnp.maximum(self.count, 1.0), 1.0)
        return jnp.clip((obs - self.mean) / jnp.sqrt(variance + 1e-8), -10.0, 10.0)


# ----------------------------------------------------------------------------------------------------------------------
# The learner: state, init, act, update
# ----------------------------------------------------------------------------------------------------------------------
class FlowRLState(struct.PyTreeNode):
    policy: dict
    q: dict
    q_target: dict
    q_beta: dict
    q_beta_target: dict
    v_beta: dict
    policy_opt: optax.OptState
    q_opt: optax.OptState
    q_beta_opt: optax.OptState
    v_beta_opt: optax.OptState
    updates: jax.Array  # int32, gradient updates done (the policy delay counts them)
    obs_stats: ObservationStats | None = None  # with `normalize_observations` only


class HeldNoise(struct.PyTreeNode):
    """The key that every held x_0 is drawn from, and the env steps observed so far."""

    key: jax.Array
    steps: jax.Array  # int32


class HeldFlowRLState(FlowRLState):
    """The state with `x0_hold` > 1. A class of its own, so that the reference's state keeps its structure (and the
    checkpoints written before `x0_hold` existed still fit it)."""

    held_noise: HeldNoise | None = None


class FlowRL(NamedTuple):
    """FlowRL for fixed observation and action sizes; every function is pure and jittable.

    init(key) -> FlowRLState (a HeldFlowRLState with `x0_hold` > 1)
    observe(state, obs [..., obs_size]) -> state: add newly seen observations to the normalisation statistics (with
        `normalize_observations`) and count the env step (with `x0_hold` > 1); otherwise the state is returned as
        it is
    act(state, obs [B, obs_size], key, deterministic=False) -> actions [B, action_size] in [-1, 1]; `deterministic`
        integrates from x_0 = 0 instead of fresh noise (it may be a traced bool)
    explore(state, obs, key) -> the actions to collect with: act's (from the held x_0 with `x0_hold` > 1), plus
        `exploration_noise`
    update(state, batch, key) -> (state, metrics): one update of Q, Q_β and V_β, and on one update in
        `policy_delay` of the policy and the targets, on a batch, a dict of arrays obs [B, obs_size], action
        [B, action_size] (in [-1, 1]), reward [B], next_obs [B, obs_size] and mask [B] (0 where the episode truly
        terminated, 1 otherwise: time limits still bootstrap)
    policy_updated(state) -> bool: whether the update that produced `state` moved the policy and the targets
    policy_metric_names: the metrics only those updates compute (zeros on the others)
    lockstep_fields: the state's step counter, equal across seeds trained together
    recent_share: (recent_fraction, recent_window), how the reference draws each batch from the replay
    progress_metric: the metric the progress bar shows
    """

    config: FlowRLConfig
    init: Callable
    observe: Callable
    act: Callable
    explore: Callable
    update: Callable
    policy_updated: Callable
    policy_metric_names: tuple[str, ...]
    lockstep_fields: tuple[str, ...]
    recent_share: tuple[float, int]
    progress_metric: str = "critic_loss"


POLICY_METRIC_NAMES = ("policy_loss", "q_policy", "cfm_error", "weight_mean", "weight_min", "weight_max",
                       "action_spread", "dq_da")
"""The last two diagnose exploration. action_spread: the policy's standard deviation over x_0 per action dimension,
averaged over the batch's first SPREAD_STATES states (from two noises per state; 0 when the flow maps every x_0 to one
action).
dq_da: the mean norm of ∂ min Q/∂a at the policy's actions, the pull that the Q term exerts."""
SPREAD_STATES = 64  # a sample is enough for a diagnostic, and keeps its extra ODE pass off the update's cost


def make_flowrl(config: FlowRLConfig, obs_size: int, action_size: int) -> FlowRL:
    config.validate()
    compute_dtype = COMPUTE_DTYPES[config.compute_dtype]
    velocity_net = VelocityField(config.hidden_dim, action_size, compute_dtype)
    q_net = twin_critic(config.hidden_dim, compute_dtype)
    # V_β is one plain head: as a vmapped ensemble of one, its gradient reductions over the size-1 axis made the
    # update ~6 % slower on XLA's CPU backend (benchmarks/results/vbeta_head_ab_cpu.txt).
    v_net = CriticHead(config.hidden_dim, compute_dtype)
    optimiser = optax.adam(config.learning_rate)
    if config.max_grad_norm is not None:
        optimiser = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optimiser)

    def flow_action(policy_params, obs, x0):
        """Squashed action in [-1, 1]^d from noise x0, differentiable w.r.t. the policy parameters."""
        def velocity(x, t):
            return velocity_net.apply(policy_params, obs, x, jnp.full((*x.shape[:-1], 1), t))
        return jnp.tanh(integrate_midpoint(velocity, x0, config.flow_steps))

    def sample_action(policy_params, obs, key):
        return flow_action(policy_params, obs, clipped_noise(key, (*obs.shape[:-1], action_size)))

    def init(key) -> FlowRLState:
        policy_key, q_key, v_key = jax.random.split(key, 3)
        obs, act = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
        policy = velocity_net.init(policy_key, obs, act, jnp.zeros((1, 1)))
        q = q_net.init(q_key, obs, act)
        v_beta = v_net.init(v_key, obs)
        # As in the reference, Q_β and both targets start as copies of Q.
        fields = dict(
            policy=policy, q=q, q_target=q, q_beta=q, q_beta_target=q, v_beta=v_beta,
            policy_opt=optimiser.init(policy), q_opt=optimiser.init(q), q_beta_opt=optimiser.init(q),
            v_beta_opt=optimiser.init(v_beta), updates=jnp.int32(0),
            obs_stats=ObservationStats.empty(obs_size) if config.normalize_observations else None,
        )
        if config.x0_hold == 1:
            return FlowRLState(**fields)
        # A key stream of its own: the networks' keys above stay those of the reference's path.
        return HeldFlowRLState(**fields, held_noise=HeldNoise(jax.random.fold_in(key, 1), jnp.int32(0)))

    def normalise(state: FlowRLState, obs):
        return obs if state.obs_stats is None else state.obs_stats.normalise(obs)

    def observe(state: FlowRLState, obs):
        if state.obs_stats is not None:
            state = state.replace(obs_stats=state.obs_stats.add(obs))
        if config.x0_hold > 1:
            state = state.replace(held_noise=state.held_noise.replace(steps=state.held_noise.steps + 1))
        return state

    def act(state: FlowRLState, obs, key, deterministic=False):
        x0 = jnp.where(deterministic, 0.0, clipped_noise(key, (*obs.shape[:-1], action_size)))
        return flow_action(state.policy, normalise(state, obs), x0)

    def explore(state: FlowRLState, obs, key):
        if config.x0_hold == 1:  # the reference: the same draws as act's, bit for bit
            action = act(state, obs, key)
        else:  # observe has counted this step: steps 1..K share block 0, K+1..2K block 1, …
            block = (state.held_noise.steps - 1) // config.x0_hold
            x0 = clipped_noise(jax.random.fold_in(state.held_noise.key, block), (*obs.shape[:-1], action_size))
            action = flow_action(state.policy, normalise(state, obs), x0)
        if config.exploration_noise == 0.0:
            return action
        noise = config.exploration_noise * jax.random.normal(jax.random.fold_in(key, 1), (*obs.shape[:-1], action_size))
        return jnp.clip(action + noise, -1.0, 1.0)

    def adam_step(params, opt_state, grads):
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def update(state: FlowRLState, batch: dict, key):
        next_noise_key, policy_noise_key, cfm_noise_key, cfm_time_key = jax.random.split(key, 4)
        obs, action, next_obs = normalise(state, batch["obs"]), batch["action"], normalise(state, batch["next_obs"])
        discount = config.gamma * batch["mask"]

        # 1. Critic: bootstrap from the target twin at a fresh policy action.
        next_action = sample_action(state.policy, next_obs, next_noise_key)
        target = batch["reward"] + discount * q_net.apply(state.q_target, next_obs, next_action).min(0)

        def q_loss_fn(params, target):
            q = q_net.apply(params, obs, action)
            return ((q - target) ** 2).mean(1).sum(), q

        (q_loss, q_values), grads = jax.value_and_grad(q_loss_fn, has_aux=True)(state.q, target)
        q_params, q_opt = adam_step(state.q, state.q_opt, grads)

        # 2. Behaviour-optimal critic: bootstrap from V_β; keep min Q_β from before its step for the weights.
        target_beta = batch["reward"] + discount * v_net.apply(state.v_beta, next_obs)
        (q_beta_loss, q_beta_values), grads = jax.value_and_grad(q_loss_fn, has_aux=True)(state.q_beta, target_beta)
        q_beta_params, q_beta_opt = adam_step(state.q_beta, state.q_beta_opt, grads)
        q_beta_min = q_beta_values.min(0)

        # 3. Behaviour-optimal value: an upper expectile of the target Q_β.
        q_beta_target_min = q_net.apply(state.q_beta_target, obs, action).min(0)

        def v_loss_fn(params):
            v = v_net.apply(params, obs)
            return expectile_loss(q_beta_target_min - v, config.expectile), v

        (v_loss, v_values), grads = jax.value_and_grad(v_loss_fn, has_aux=True)(state.v_beta)
        v_beta_params, v_beta_opt = adam_step(state.v_beta, state.v_beta_opt, grads)

        # 4–5. Policy and targets, on one update in `policy_delay` (the first included).
        update_count = state.updates + 1
        policy_step = is_policy_update(update_count, config.policy_delay)

        def policy_loss_fn(params, q_action_probe):
            policy_action = sample_action(params, obs, policy_noise_key)
            # q_action_probe is zero: its gradient is ∂loss/∂a at the policy's actions, which the backward pass
            # computes anyway, read out for the dq_da metric.
            q_policy = q_net.apply(q_params, obs, policy_action + q_action_probe).min(0)
            weights = flow_matching_weights(q_beta_min, q_policy, config.lagrange)
            t = jax.random.uniform(cfm_time_key, (action.shape[0], 1))
            x_t, target_velocity = flow_matching_pairs(action, clipped_noise(cfm_noise_key, action.shape), t)
            cfm_error = ((velocity_net.apply(params, obs, x_t, t) - target_velocity) ** 2).mean(-1)
            loss = policy_objective(q_policy, cfm_error, weights, config.policy_loss)
            # A second noise for the first SPREAD_STATES states, from a key of its own so that the update's draws
            # stay the reference's.
            other_action = sample_action(params, obs[:SPREAD_STATES], jax.random.fold_in(policy_noise_key, 1))
            first_actions = jax.lax.stop_gradient(policy_action[:SPREAD_STATES])
            spread = jnp.sqrt(0.5 * jnp.mean((first_actions - other_action) ** 2))
            values = (loss, q_policy.mean(), cfm_error.mean(), weights.mean(), weights.min(), weights.max(), spread)
            return loss, dict(zip(POLICY_METRIC_NAMES, values))

        def policy_and_targets(_):
            (grads, q_action_grad), metrics = jax.grad(policy_loss_fn, argnums=(0, 1), has_aux=True)(
                state.policy, jnp.zeros_like(action))
            # Both objectives average −Q over the batch, so B·∂loss/∂a is −∂Q/∂a per sample.
            metrics["dq_da"] = jnp.linalg.norm(q_action_grad * action.shape[0], axis=-1).mean()
            policy, policy_opt = adam_step(state.policy, state.policy_opt, grads)
            q_target = optax.incremental_update(q_params, state.q_target, config.target_rate)
            q_beta_target = optax.incremental_update(q_beta_params, state.q_beta_target, config.target_rate)
            return policy, policy_opt, q_target, q_beta_target, metrics

        def unchanged(_):
            # Zeros shaped and typed as the policy step's metrics, so that both branches agree in any precision.
            metric_shapes = jax.eval_shape(policy_and_targets, None)[-1]
            metrics = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), metric_shapes)
            return state.policy, state.policy_opt, state.q_target, state.q_beta_target, metrics

        policy, policy_opt, q_target, q_beta_target, policy_metrics = jax.lax.cond(
            policy_step, policy_and_targets, unchanged, None)

        state = state.replace(
            policy=policy, q=q_params, q_target=q_target, q_beta=q_beta_params, q_beta_target=q_beta_target,
            v_beta=v_beta_params, policy_opt=policy_opt, q_opt=q_opt, q_beta_opt=q_beta_opt, v_beta_opt=v_beta_opt,
            updates=update_count,
        )
        metrics = dict(critic_loss=q_loss, q_mean=q_values.mean(), q_beta_loss=q_beta_loss,
                       q_beta_mean=q_beta_values.mean(), v_beta_loss=v_loss, v_beta_mean=v_values.mean(),
                       **policy_metrics)
        return state, metrics

    def policy_updated(state: FlowRLState):
        return is_policy_update(state.updates, config.policy_delay)

    return FlowRL(config=config, init=init, observe=observe, act=act, explore=explore, update=update,
                  policy_updated=policy_updated,
                  policy_metric_names=POLICY_METRIC_NAMES, lockstep_fields=("updates",),
                  recent_share=(config.recent_fraction, config.recent_window))


# ----------------------------------------------------------------------------------------------------------------------
# The exported policy: policy_<step>.msgpack beside each checkpoint (docs/videos.md). The same reader is in both
# algorithm files, so that each stands alone.
# ----------------------------------------------------------------------------------------------------------------------
POLICY_FORMAT = "flowrl-jax-policy/1"
POLICY_FIELDS = ("policy", "obs_stats")  # the state's fields that `act` reads: what the file holds


def read_policy_file(path) -> tuple[dict, dict]:
    """(fields, metadata) of an exported policy whose format and SHA-256 check out; ValueError otherwise. flax's
    msgpack_restore yields only dicts, strings and arrays, so reading a file runs no code."""
    try:
        payload = serialization.msgpack_restore(Path(path).read_bytes())
        if payload.get("format") != POLICY_FORMAT:
            raise ValueError(f"its format is not {POLICY_FORMAT}")
        text, fields = payload["metadata"], payload["fields"]
        arrays = traverse_util.flatten_dict(fields, sep="/")
        if not all(isinstance(array, np.ndarray) for array in arrays.values()):
            raise ValueError("a field holds something other than arrays")
        sha = hashlib.sha256(text.encode())
        for name, array in sorted(arrays.items()):
            sha.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            sha.update(np.ascontiguousarray(array).tobytes())
        if sha.hexdigest() != payload["sha256"]:
            raise ValueError("checksum mismatch: its contents differ from those written")
        return fields, json.loads(text)
    except Exception as error:  # whatever the bytes hold, one message names the file and the fault
        raise ValueError(f"{path}: not a valid exported policy ({type(error).__name__}: {error})") from error


def load_policy(path) -> tuple[FlowRL, FlowRLState, dict]:
    """(agent, state, metadata) of an exported policy: agent.act(state, obs, key, deterministic) acts as the trained
    policy did, in [-1, 1]; metadata["action_low"] and ["action_high"] are the env's bounds. Only the fields in
    POLICY_FIELDS hold trained values (the critics are fresh)."""
    fields, metadata = read_policy_file(path)
    agent = make_flowrl(FlowRLConfig(**metadata["config"]), metadata["obs_size"], metadata["action_size"])
    template = agent.init(jax.random.key(0))
    state = template.replace(**{name: serialization.from_state_dict(getattr(template, name), value)
                                for name, value in fields.items()})
    return agent, state, metadata


# ----------------------------------------------------------------------------------------------------------------------
# Command line: `python flowrl_jax.py --env humanoid-walk`, `--help` for every flag
# ----------------------------------------------------------------------------------------------------------------------
HARNESS_CONFIG = FlowRLConfig  # its fields are this script's hyperparameter flags (the other scripts name them)


def main() -> None:
    from common.run import cli  # the harness, imported here so that the algorithm above needs nothing of ours
    from common.run.policy_export import PolicyFile

    cli.main("flowrl", FlowRLConfig, make_flowrl, PolicyFile(POLICY_FIELDS, load_policy))


if __name__ == "__main__":
    main()
