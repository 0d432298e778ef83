"""The layers of FlowRL's reference implementation, with PyTorch's defaults, and its value head.

The reference builds every network from PyTorch layers: each Linear is initialised Xavier-uniform with a zero bias,
LayerNorm has ε = 1e-5 and GELU is the exact (erf) form. flax's defaults differ in all three (LeCun-normal weights,
ε = 1e-6, the tanh approximation of GELU), so the layers are fixed here once, for FlowRL and for SAC's reference
critic.
"""

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

dense = partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros)
layer_norm = partial(nn.LayerNorm, epsilon=1e-5)


def gelu(x):
    return nn.gelu(x, approximate=False)


class CriticHead(nn.Module):
    """One value head as the reference builds Q, Q_β and V_β: Dense, then LN → Dense → LN → GELU → Dense → LN → GELU
    → Dense → LN, then Dense(1). The inputs are concatenated ((s, a) for Q, s alone for V)."""

    hidden_dim: int

    @nn.compact
    def __call__(self, *inputs):
        h = dense(self.hidden_dim)(jnp.concatenate(inputs, axis=-1))
        h = dense(self.hidden_dim)(layer_norm()(h))
        h = gelu(layer_norm()(h))
        h = dense(self.hidden_dim)(h)
        h = gelu(layer_norm()(h))
        h = dense(self.hidden_dim)(h)
        return dense(1)(layer_norm()(h)).squeeze(-1)


def ensemble(head: type[nn.Module], num_heads: int, *head_args) -> nn.Module:
    """`num_heads` independent copies of `head(*head_args)` with stacked parameters (each initialised from its own
    key), applied to the same inputs; output [num_heads, batch]."""
    stacked = nn.vmap(head, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                      axis_size=num_heads)
    return stacked(*head_args)
