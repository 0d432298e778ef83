"""SAC: soft actor-critic with automatic temperature (Haarnoja et al., 2018), in JAX.

The baseline that FlowRL is compared with. The actor is a tanh-squashed Gaussian; twin critics bootstrap from Polyak
targets at a fresh policy action minus α·log π; the temperature α is learned so that the policy's entropy tracks a
target. By default the critics have FlowRL's reference architecture (`--critic reference`), so that a comparison
isolates the policy class; `--critic classic` gives the usual 256×256 ReLU MLP.

This file is the whole algorithm and imports only pip packages: copy it alone into your own code (README, "Use the
algorithm in your own code"). `make_sac(config, obs_size, action_size)` gives pure, jittable `init`, `act` and
`update(state, batch, key)`. FlowRL's reference layers are also written out in flowrl_jax.py, so that each file stands
alone. Only `main` at the bottom uses this repository's harness (common/: MJX envs, replay, the compiled chunk,
logging, checkpoints).
Classic SAC (one env, one update per env step): `--num-envs 1 --updates-per-iteration 1 --batch-size 256
--critic classic`.
"""

import dataclasses
import hashlib
import json
import math
from functools import partial
from pathlib import Path
from typing import Callable, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct, traverse_util
from flax.typing import Dtype

CRITIC_WIDTHS = {"reference": 512, "classic": 256}
ACTOR_WIDTH = 256
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclasses.dataclass
class SACConfig:
    """SAC's hyperparameters. Batches are drawn uniformly over the replay."""

    critic: Literal["reference", "classic"] = "reference"
    """`reference`: FlowRL's reference critic, with its layers (Dense, then LN → Dense → LN → GELU → Dense → LN → GELU
    → Dense → LN, then Dense(1)); `classic`: a 2-layer ReLU MLP as in the SAC paper."""
    hidden_dim: int | None = None
    """Width of every network (the actor and the critics); the two flags below override it per network."""
    critic_hidden_dim: int | None = None
    """Width of each critic (default: --hidden-dim, else 512 for `reference` as in FlowRL, 256 for `classic` as in
    the SAC paper)."""
    actor_hidden_dim: int | None = None
    """Width of the actor's 2-layer ReLU MLP (default: --hidden-dim, else 256)."""
    tau: float = 0.005
    """Polyak rate: target ← (1-τ)·target + τ·online after every update."""
    init_temperature: float = 1.0
    """α at the start (Brax/Playground SAC and CleanRL start at 1; DMC-tuned SAC often at 0.1)."""
    target_entropy: float | None = None
    """Entropy that α steers the policy toward (default: −|A|, the action dimension)."""
    learning_rate: float = 3e-4
    """Adam step size for every network and the temperature."""
    max_grad_norm: float | None = None
    """Clip each gradient to this global norm before Adam (default: no clipping, as in the reference)."""
    normalize_observations: bool = False
    """Scale each observation by the running mean and std of all observations passed to `observe` (Playground's SAC
    normalises; the reference does not)."""
    gamma: float = 0.99
    """Discount."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of every matmul. `bfloat16` multiplies each layer's inputs and weights in bfloat16, as FlowRL's
    reference does under bf16 autocast on CUDA; the parameters, optimiser states, the temperature, LayerNorms,
    activations, losses and targets stay float32."""

    def validate(self) -> None:
        """Raise ValueError, naming the flag, for a value the algorithm cannot use."""
        if self.max_grad_norm is not None and not 0 < self.max_grad_norm < float("inf"):
            raise ValueError(f"--max-grad-norm must be a positive number, got {self.max_grad_norm}")
        for name in ("hidden_dim", "actor_hidden_dim", "critic_hidden_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{_flag(name)} must be a positive integer (≥ 1), got {value}")
        for name in ("init_temperature", "target_entropy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{_flag(name)} must be a finite number, got {value}")
        for name, low, high, low_open in (("tau", 0.0, 1.0, True), ("init_temperature", 0.0, float("inf"), True),
                                          ("learning_rate", 0.0, float("inf"), True), ("gamma", 0.0, 1.0, False)):
            value = getattr(self, name)
            if not (low < value if low_open else low <= value) or value > high:
                raise ValueError(f"{_flag(name)} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
        if self.critic not in CRITIC_WIDTHS:
            raise ValueError(f"--critic must be `reference` or `classic`, got {self.critic!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--compute-dtype must be `float32` or `bfloat16`, got {self.compute_dtype!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------------------------------------------------
# Networks. The reference critic uses FlowRL's reference PyTorch layers: Xavier-uniform weights and zero biases,
# LayerNorm ε = 1e-5 and the exact (erf) GELU (flax's defaults differ in all three).
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
    """One Q(s, a) head as FlowRL's reference builds it: Dense, then LN → Dense → LN → GELU → Dense → LN → GELU →
    Dense → LN, then Dense(1), on concat[s, a]."""

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


class ClassicCriticHead(nn.Module):
    """One Q(s, a) head as in the SAC paper: 2 × (Dense → ReLU), then Dense(1)."""

    hidden_dim: int
    compute_dtype: Dtype | None = None  # the matmuls' dtype (COMPUTE_DTYPES)

    @nn.compact
    def __call__(self, obs, action):
        linear = partial(Dense, dtype=self.compute_dtype)
        h = jnp.concatenate([obs, action], axis=-1)
        for _ in range(2):
            h = nn.relu(linear(self.hidden_dim)(h))
        return linear(1)(h).squeeze(-1)


def twin_critic(hidden_dim: int, kind: str, compute_dtype: Dtype | None = None) -> nn.Module:
    """Two independent heads of the `kind` architecture (see SACConfig.critic), each initialised from its own key,
    with stacked parameters; output [2, batch]."""
    head = CriticHead if kind == "reference" else ClassicCriticHead
    stacked = nn.vmap(head, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                      axis_size=2)
    return stacked(hidden_dim, compute_dtype)


class Actor(nn.Module):
    """π(·|s): 2 × (Dense → ReLU), then the mean and log-std of a Gaussian over the pre-tanh action u.

    log_std = tanh(·) rescaled to [LOG_STD_MIN, LOG_STD_MAX]: a smooth bound, so its gradient never vanishes abruptly.
    """

    hidden_dim: int
    action_dim: int
    compute_dtype: Dtype | None = None  # the matmuls' dtype (COMPUTE_DTYPES)

    @nn.compact
    def __call__(self, obs):
        linear = partial(Dense, dtype=self.compute_dtype)
        h = obs
        for _ in range(2):
            h = nn.relu(linear(self.hidden_dim)(h))
        mean = linear(self.action_dim)(h)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(linear(self.action_dim)(h)) + 1.0)
        return mean, log_std


# ----------------------------------------------------------------------------------------------------------------------
# The squashed Gaussian and the losses (pure functions, unit-tested on their own)
# ----------------------------------------------------------------------------------------------------------------------
def squashed_log_prob(u, mean, log_std):
    """log π(a|s) of a = tanh(u), u ~ N(mean, exp(log_std)²), summed over action dimensions.

    Change of variables: log π(a) = log N(u) − Σ log(1 − tanh(u)²), and log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u))
    exactly, which stays finite where tanh(u) rounds to ±1.
    """
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det_jacobian = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return (gaussian - log_det_jacobian).sum(-1)


def sample_squashed(key, mean, log_std):
    """A reparameterised action a = tanh(mean + std·ε) in (−1, 1)^d and its log-probability."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), squashed_log_prob(u, mean, log_std)


def soft_target(reward, discount, next_q_min, next_log_prob, temperature):
    """y = r + γ·m·(min_i Q̄_i(s′, a′) − α·log π(a′|s′)), a′ ~ π(·|s′)."""
    return reward + discount * (next_q_min - temperature * next_log_prob)


def actor_objective(q_min, log_prob, temperature):
    """E[α·log π(a|s) − min_i Q_i(s, a)], a ~ π(·|s): maximise the soft value."""
    return jnp.mean(temperature * log_prob - q_min)


def temperature_objective(log_temperature, log_prob, target_entropy):
    """−log α · E[log π + H̄] with log π held fixed: its gradient in log α is (entropy − H̄), so a descent step raises
    α while the entropy is below the target and lowers it while above."""
    return -log_temperature * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)


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
class SACState(struct.PyTreeNode):
    actor: dict
    q: dict
    q_target: dict
    log_temperature: jax.Array  # float32 scalar: log α
    actor_opt: optax.OptState
    q_opt: optax.OptState
    temperature_opt: optax.OptState
    updates: jax.Array  # int32, gradient updates done
    obs_stats: ObservationStats | None = None  # with `normalize_observations` only


class SAC(NamedTuple):
    """SAC for fixed observation and action sizes; every function is pure and jittable.

    config: the hyperparameters with the defaults that depend on the action size filled in
    init(key) -> SACState
    observe(state, obs [..., obs_size]) -> state: add newly seen observations to the normalisation statistics (with
        `normalize_observations`; otherwise the state is returned as it is)
    act(state, obs [B, obs_size], key, deterministic=False) -> actions [B, action_size] in [-1, 1]; `deterministic`
        takes tanh of the Gaussian's mean instead of a sample (it may be a traced bool)
    explore(state, obs, key) -> act's sample: SAC collects with its own stochastic policy
    update(state, batch, key) -> (state, metrics): critics, actor, temperature, then Polyak targets, on a batch, a
        dict of arrays obs [B, obs_size], action [B, action_size] (in [-1, 1]), reward [B], next_obs [B, obs_size]
        and mask [B] (0 where the episode truly terminated, 1 otherwise: time limits still bootstrap)
    policy_updated(state) -> True: SAC moves its actor on every update
    policy_metric_names: none (every metric is computed on every update)
    lockstep_fields: the state's step counter, equal across seeds trained together
    recent_share: None, batches are drawn uniformly over the replay
    progress_metric: the metric the progress bar shows
    """

    config: SACConfig
    init: Callable
    observe: Callable
    act: Callable
    explore: Callable
    update: Callable
    policy_updated: Callable
    policy_metric_names: tuple[str, ...] = ()
    lockstep_fields: tuple[str, ...] = ("updates",)
    recent_share: tuple[float, int] | None = None
    progress_metric: str = "critic_loss"


def make_sac(config: SACConfig, obs_size: int, action_size: int) -> SAC:
    config.validate()
    config = dataclasses.replace(
        config,
        actor_hidden_dim=config.actor_hidden_dim or config.hidden_dim or ACTOR_WIDTH,
        critic_hidden_dim=config.critic_hidden_dim or config.hidden_dim or CRITIC_WIDTHS[config.critic],
        target_entropy=-float(action_size) if config.target_entropy is None else config.target_entropy,
    )
    compute_dtype = COMPUTE_DTYPES[config.compute_dtype]
    actor_net = Actor(config.actor_hidden_dim, action_size, compute_dtype)
    q_net = twin_critic(config.critic_hidden_dim, config.critic, compute_dtype)
    optimiser = optax.adam(config.learning_rate)
    if config.max_grad_norm is not None:
        optimiser = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optimiser)

    def sample_action(actor_params, obs, key):
        return sample_squashed(key, *actor_net.apply(actor_params, obs))

    def init(key) -> SACState:
        actor_key, q_key = jax.random.split(key)
        obs, act = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
        actor = actor_net.init(actor_key, obs)
        q = q_net.init(q_key, obs, act)
        log_temperature = jnp.log(jnp.float32(config.init_temperature))
        return SACState(
            actor=actor, q=q, q_target=q, log_temperature=log_temperature,
            actor_opt=optimiser.init(actor), q_opt=optimiser.init(q), temperature_opt=optimiser.init(log_temperature),
            updates=jnp.int32(0),
            obs_stats=ObservationStats.empty(obs_size) if config.normalize_observations else None,
        )

    def normalise(state: SACState, obs):
        return obs if state.obs_stats is None else state.obs_stats.normalise(obs)

    def observe(state: SACState, obs):
        return state if state.obs_stats is None else state.replace(obs_stats=state.obs_stats.add(obs))

    def act(state: SACState, obs, key, deterministic=False):
        mean, log_std = actor_net.apply(state.actor, normalise(state, obs))
        return jnp.where(deterministic, jnp.tanh(mean), sample_squashed(key, mean, log_std)[0])

    def adam_step(params, opt_state, grads):
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def update(state: SACState, batch: dict, key):
        next_action_key, action_key = jax.random.split(key)
        obs, action, next_obs = normalise(state, batch["obs"]), batch["action"], normalise(state, batch["next_obs"])
        temperature = jnp.exp(state.log_temperature)

        # Critics: regress both heads on the soft target from the target twin.
        next_action, next_log_prob = sample_action(state.actor, next_obs, next_action_key)
        next_q_min = q_net.apply(state.q_target, next_obs, next_action).min(0)
        target = soft_target(batch["reward"], config.gamma * batch["mask"], next_q_min, next_log_prob, temperature)

        def q_loss_fn(params):
            q = q_net.apply(params, obs, action)
            return ((q - target) ** 2).mean(1).sum(), q

        (q_loss, q_values), grads = jax.value_and_grad(q_loss_fn, has_aux=True)(state.q)
        q_params, q_opt = adam_step(state.q, state.q_opt, grads)

        # Actor: reparameterised through the updated critics.
        def actor_loss_fn(params):
            new_action, log_prob = sample_action(params, obs, action_key)
            return actor_objective(q_net.apply(q_params, obs, new_action).min(0), log_prob, temperature), log_prob

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor)
        actor_params, actor_opt = adam_step(state.actor, state.actor_opt, grads)

        # Temperature: from the log-probabilities of the actions the actor step just saw.
        temperature_loss, grads = jax.value_and_grad(temperature_objective)(
            state.log_temperature, log_prob, config.target_entropy)
        log_temperature, temperature_opt = adam_step(state.log_temperature, state.temperature_opt, grads)

        state = state.replace(
            actor=actor_params, q=q_params, q_target=optax.incremental_update(q_params, state.q_target, config.tau),
            log_temperature=log_temperature, actor_opt=actor_opt, q_opt=q_opt, temperature_opt=temperature_opt,
            updates=state.updates + 1,
        )
        metrics = dict(critic_loss=q_loss, q_mean=q_values.mean(), actor_loss=actor_loss, entropy=-log_prob.mean(),
                       temperature=temperature, temperature_loss=temperature_loss)
        return state, metrics

    return SAC(config=config, init=init, observe=observe, act=act, explore=partial(act, deterministic=False),
               update=update,
               policy_updated=lambda state: jnp.bool_(True))


# ----------------------------------------------------------------------------------------------------------------------
# The exported policy: policy_<step>.msgpack beside each checkpoint (docs/videos.md). The same reader is in both
# algorithm files, so that each stands alone.
# ----------------------------------------------------------------------------------------------------------------------
POLICY_FORMAT = "flowrl-jax-policy/1"
POLICY_FIELDS = ("actor", "obs_stats")  # the state's fields that `act` reads: what the file holds


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


def load_policy(path) -> tuple[SAC, SACState, dict]:
    """(agent, state, metadata) of an exported policy: agent.act(state, obs, key, deterministic) acts as the trained
    policy did, in [-1, 1]; metadata["action_low"] and ["action_high"] are the env's bounds. Only the fields in
    POLICY_FIELDS hold trained values (the critics are fresh)."""
    fields, metadata = read_policy_file(path)
    agent = make_sac(SACConfig(**metadata["config"]), metadata["obs_size"], metadata["action_size"])
    template = agent.init(jax.random.key(0))
    state = template.replace(**{name: serialization.from_state_dict(getattr(template, name), value)
                                for name, value in fields.items()})
    return agent, state, metadata


# ----------------------------------------------------------------------------------------------------------------------
# Command line: `python sac_jax.py --env humanoid-walk`, `--help` for every flag
# ----------------------------------------------------------------------------------------------------------------------
HARNESS_CONFIG = SACConfig  # its fields are this script's hyperparameter flags (the other scripts name them)


def main() -> None:
    from common.run import cli  # the harness, imported here so that the algorithm above needs nothing of ours
    from common.run.policy_export import PolicyFile

    cli.main("sac", SACConfig, make_sac, PolicyFile(POLICY_FIELDS, load_policy))


if __name__ == "__main__":
    main()
