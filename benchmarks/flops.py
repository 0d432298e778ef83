"""Matrix-multiply FLOPs of a JAX function, read from its jaxpr.

XLA's own cost analysis counts a loop body once and a `lax.cond` as its costliest branch, so it cannot give the
average cost of FlowRL's update, whose policy branch runs on one update in `policy_delay`. Counting dot_general FLOPs
(2·M·N·K, the arithmetic that bounds an MLP update) per branch gives both ends exactly.
"""

import math

import jax
from jax.extend import core

# FP32 peak of this project's CPU (2-core AMD EPYC Zen 4): 2 cores × 2 FMA × 16 lanes × 2 FLOP × ~2.6 GHz.
CPU_PEAK_GFLOPS = 166.0


def dot_flops(equation) -> int:
    (lhs_contract, _), (lhs_batch, _) = equation.params["dimension_numbers"]
    lhs, rhs = (var.aval.shape for var in equation.invars)
    out = equation.outvars[0].aval.shape
    del rhs
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def jaxpr_flops(jaxpr) -> tuple[int, int]:
    """(fewest, most) matmul FLOPs of one execution: each cond contributes its cheapest or its costliest branch."""
    low = high = 0
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general":
            low, high = low + dot_flops(equation), high + dot_flops(equation)
        elif equation.primitive.name == "cond":
            branches = [jaxpr_flops(branch.jaxpr) for branch in equation.params["branches"]]
            low, high = low + min(b[0] for b in branches), high + max(b[1] for b in branches)
        else:
            repeat = equation.params.get("length", 1) if equation.primitive.name == "scan" else 1
            for param in equation.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    inner = sub.jaxpr if isinstance(sub, core.ClosedJaxpr) else sub
                    if isinstance(inner, core.Jaxpr):
                        sub_low, sub_high = jaxpr_flops(inner)
                        low, high = low + repeat * sub_low, high + repeat * sub_high
    return low, high


def matmul_flops(function, *args) -> tuple[int, int]:
    return jaxpr_flops(jax.make_jaxpr(function)(*args).jaxpr)
