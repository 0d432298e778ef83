"""Several processes (hosts) in one run, through JAX's own runtime, `jax.distributed`.

Every process runs the same command. `initialize` joins them from the environment before JAX touches a device:
- JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID; or
- a SLURM job step with more than one task (SLURM_NTASKS > 1), whose variables JAX reads itself.
Without either, the run is one process, as always.

Process 0 alone writes the run directory (logs, plots, checkpoints, exported policies); the others compute their
part of every compiled call and take part in the collectives that bring values to the host.

On the CPU, collectives go through gloo, which gives up on a peer that is more than 30 s late. Processes are that far
apart after compiling a program (each compiles on its own) or after process 0 alone has read or written a checkpoint.
So they first meet at a barrier of JAX's coordination service, which waits as long as it is told: before a program's
first run (`compiled_everywhere`), before every exchange here, and after process 0 writes.
"""

import functools
import os

import jax
import numpy as np
from jax._src import distributed  # the coordination service's client, as JAX's own array serialization reaches it
from jax.experimental import multihost_utils

# How long a process waits at a barrier for the others: past compiling a large program or writing a checkpoint of
# several GB. A process that died is reported sooner, by the coordination service's heartbeats (100 s).
BARRIER_TIMEOUT_S = 3600


def initialize() -> bool:
    """Join the run's other processes, if the environment names any (see the module docstring); whether it did."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        try:
            count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise SystemExit("error: JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be "
                             "integers too")
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index)
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
        return True
    return False


def is_main() -> bool:
    """Whether this process writes the run's files."""
    return jax.process_index() == 0


_barriers_passed = 0


def barrier(name: str) -> None:
    """Wait until every process has come here. Every process passes the same barriers in the same order, so the
    count makes each one's id unique, as the coordination service requires."""
    global _barriers_passed
    if jax.process_count() == 1:
        return
    _barriers_passed += 1
    distributed.global_state.client.wait_at_barrier(f"{name} #{_barriers_passed}", BARRIER_TIMEOUT_S * 1000)


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (all of them learn it): a signal that reaches one host stops all of
    them at the same chunk."""
    if jax.process_count() == 1:
        return flag
    barrier("any_process")
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def from_main(tree):
    """Process 0's value of `tree` (numpy leaves, the same shapes on every process), on every process."""
    if jax.process_count() == 1:
        return tree
    barrier("from_main")
    return multihost_utils.broadcast_one_to_all(tree)


def _layout(args) -> tuple:
    """What selects a compiled program for `args`: the tree, and each leaf's shape, dtype and sharding."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple((np.shape(leaf), getattr(leaf, "dtype", type(leaf)), getattr(leaf, "sharding", None))
                       for leaf in leaves)


def compiled_everywhere(jitted):
    """`jitted` (a jax.jit function) whose first call with each argument layout compiles it ahead (jit keeps the
    executable for the call), then waits at a barrier until every process has compiled it too, so its collectives
    start together. One process: `jitted` itself."""
    if jax.process_count() == 1:
        return jitted
    compiled_for = set()

    @functools.wraps(jitted)
    def call(*args):
        layout = _layout(args)
        if layout not in compiled_for:
            jitted.lower(*args).compile()
            barrier(f"compiled {getattr(jitted, '__name__', 'a program')}")
            compiled_for.add(layout)
        return jitted(*args)

    return call
