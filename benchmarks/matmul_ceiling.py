"""The device's matmul ceiling for an update's three matmul forms, in f32 and in bf16 with f32 accumulation.

A dense layer's training step multiplies in three layouts: forward x·W, input gradient g·Wᵀ and weight gradient
xᵀ·g. Each is timed alone (a scan of `--repeats-per-call` products, best of `--calls`) at the reference sizes, which
bounds what a whole update can reach against --peak-gflops. Rows are appended to --out with the device and command.

    python benchmarks/matmul_ceiling.py
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.flops import CPU_PEAK_GFLOPS  # noqa: E402
from benchmarks.record import append_row, provenance  # noqa: E402
from benchmarks.timing import best_seconds  # noqa: E402

# (name, einsum of one product, whether its second operand is the weight W [width, width]; if not, it is a second
# [batch, width] activation-shaped operand: the weight gradient contracts over the batch).
FORMS = (("forward x·W", "bi,io->bo", True), ("input grad g·Wᵀ", "bo,io->bi", True),
         ("weight grad xᵀ·g", "bi,bo->io", False))


@dataclasses.dataclass
class Args:
    batch_size: int = 256
    """Rows of x (the reference batch)."""
    width: int = 512
    """Width of the square weight (the reference hidden size)."""
    repeats_per_call: int = 100
    """Products per timed call (one scan)."""
    calls: int = 7
    """Timed calls; the best is reported."""
    peak_gflops: float = CPU_PEAK_GFLOPS
    """Peak FP32 GFLOP/s of the device (default: this project's 2-core CPU)."""
    out: str = "benchmarks/results/matmul_ceiling_cpu.csv"
    """CSV that rows are appended to."""


def gflops(args: Args, equation: str, second_is_weight: bool, dtype) -> float:
    x = jax.random.normal(jax.random.key(0), (args.repeats_per_call, args.batch_size, args.width))
    w = jax.random.normal(jax.random.key(1), (args.width, args.width))

    def product(total, xi):
        other = w if second_is_weight else xi
        result = jnp.einsum(equation, xi.astype(dtype), other.astype(dtype), preferred_element_type=jnp.float32)
        return total + result[0, 0], None  # one element of each product keeps it alive

    run = jax.jit(lambda x: jax.lax.scan(product, jnp.float32(0), x)[0])
    jax.block_until_ready(run(x))  # compile outside the timing
    seconds = best_seconds(lambda: run(x), args.calls)
    return 2 * args.batch_size * args.width**2 * args.repeats_per_call / seconds / 1e9


def main() -> None:
    args = tyro.cli(Args)
    for dtype in (jnp.float32, jnp.bfloat16):
        for form, equation, second_is_weight in FORMS:
            rate = gflops(args, equation, second_is_weight, dtype)
            append_row(args.out, dict(form=form, dtype=jnp.dtype(dtype).name, batch_size=args.batch_size,
                                      width=args.width, gflops=round(rate, 1),
                                      fp32_peak_fraction=round(rate / args.peak_gflops, 3), **provenance()))


if __name__ == "__main__":
    main()
