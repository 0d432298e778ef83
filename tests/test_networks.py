"""The reference's layers, written out in both algorithm files: PyTorch's initialisation, LayerNorm ε and exact GELU,
checked against a NumPy re-implementation of the reference's forward passes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowrl_jax as flowrl
import sac_jax as sac

erf = np.vectorize(math.erf)


def torch_layer_norm(x, params):
    """torch.nn.LayerNorm: biased variance, ε = 1e-5."""
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * params["scale"] + params["bias"]


def torch_gelu(x):
    """torch.nn.GELU() (approximate='none'): x·Φ(x) with the exact normal CDF."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def torch_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def linear(x, params):
    return x @ params["kernel"] + params["bias"]


def reference_critic(params, x):
    """The reference's value network: Linear, then its value block (LN, Linear, LN, GELU, Linear, LN, GELU, Linear,
    LN), then Linear(1)."""
    h = linear(x, params["Dense_0"])
    h = linear(torch_layer_norm(h, params["LayerNorm_0"]), params["Dense_1"])
    h = linear(torch_gelu(torch_layer_norm(h, params["LayerNorm_1"])), params["Dense_2"])
    h = linear(torch_gelu(torch_layer_norm(h, params["LayerNorm_2"])), params["Dense_3"])
    return linear(torch_layer_norm(h, params["LayerNorm_3"]), params["Dense_4"])[:, 0]


def reference_velocity(params, x):
    """The reference's Policy_flow.forward on concat[s, x, t]."""
    h = torch_elu(torch_layer_norm(linear(x, params["Dense_0"]), params["LayerNorm_0"]))
    h = torch_elu(torch_layer_norm(linear(h, params["Dense_1"]), params["LayerNorm_1"]))
    return linear(h, params["Dense_2"])


def perturbed(params, key):
    """The initial parameters with noise on the LayerNorm scales and offsets, so that the GELUs see inputs of O(1);
    the Dense biases stay 0, so that the first LayerNorm sees the tiny variance of the input."""
    paths, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(paths))
    leaves = [leaf + jax.random.normal(k, leaf.shape) if "LayerNorm" in jax.tree_util.keystr(path) else leaf
              for (path, leaf), k in zip(paths, keys)]
    return jax.tree.unflatten(tree, leaves)


# Inputs of scale 1e-3 give the first LayerNorm a variance of ~1e-6, where flax's ε = 1e-6 moves the outputs by ~1
# (measured); the GELUs see O(1) inputs, where the tanh approximation moves the critic's output by ~6e-4. The float32
# networks match the float64 reference to ~3e-7.
@pytest.mark.parametrize("module", [flowrl, sac], ids=["flowrl_jax", "sac_jax"])
def test_each_files_critic_matches_the_reference_forward_pass(module):
    x = 1e-3 * jax.random.normal(jax.random.key(0), (8, 7))
    critic = module.CriticHead(hidden_dim=16)
    critic_params = perturbed(critic.init(jax.random.key(1), x), jax.random.key(2))
    np.testing.assert_allclose(critic.apply(critic_params, x),
                               reference_critic(jax.device_get(critic_params)["params"], np.asarray(x, np.float64)),
                               rtol=1e-5, atol=1e-5)


def test_velocity_field_matches_the_reference_forward_pass():
    x = 1e-3 * jax.random.normal(jax.random.key(0), (8, 7))
    velocity = flowrl.VelocityField(hidden_dim=16, action_dim=2)
    obs, noise, t = x[:, :4], x[:, 4:6], x[:, 6:]
    velocity_params = perturbed(velocity.init(jax.random.key(3), obs, noise, t), jax.random.key(4))
    np.testing.assert_allclose(velocity.apply(velocity_params, obs, noise, t),
                               reference_velocity(jax.device_get(velocity_params)["params"], np.asarray(x, np.float64)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_layers, params", [
    (3, lambda: flowrl.VelocityField(256, 6).init(
        jax.random.key(0), jnp.zeros((1, 20)), jnp.zeros((1, 6)), jnp.zeros((1, 1)))),
    (5, lambda: flowrl.twin_critic(256).init(
        jax.random.key(0), jnp.zeros((1, 20)), jnp.zeros((1, 6)))),
    (5, lambda: sac.twin_critic(256, "reference").init(
        jax.random.key(0), jnp.zeros((1, 20)), jnp.zeros((1, 6)))),
], ids=["velocity field", "FlowRL twin critic", "SAC reference critic"])
def test_every_linear_layer_starts_xavier_uniform_with_zero_bias(num_layers, params):
    """torch.nn.init.xavier_uniform_: U(±√(6 / (fan_in + fan_out))), so variance 2 / (fan_in + fan_out). flax's
    default (LeCun normal, variance 1 / fan_in) fails both checks on the first layer (fan_in 27 or 26) and the bound
    on the square ones."""
    dense_layers = [layer for path, layer in jax.tree_util.tree_flatten_with_path(
        params(), is_leaf=lambda node: isinstance(node, dict) and "kernel" in node)[0]
        if "Dense" in jax.tree_util.keystr(path)]
    assert len(dense_layers) == num_layers
    for layer in dense_layers:
        kernels = np.asarray(layer["kernel"]).reshape(-1, *layer["kernel"].shape[-2:])  # [heads, fan_in, fan_out]
        fan_in, fan_out = kernels.shape[1:]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(kernels).max() <= bound
        np.testing.assert_allclose(kernels.var(), bound**2 / 3, rtol=0.2)  # ≥ 256 weights per layer: ~6 % spread
        assert not np.any(np.asarray(layer["bias"]))
