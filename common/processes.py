"""Several processes (hosts) in one run, through JAX's own runtime, `jax.distributed`.

Every process runs the same command. `initialize` joins them from the environment before JAX touches a device:
- JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID; or
- a SLURM job step with more than one task (SLURM_NTASKS > 1), whose variables JAX reads itself.
Without either, the run is one process, as always.

Process 0 alone writes the run directory (logs, plots, checkpoints, exported policies); the others compute their
part of every compiled call and take part in the collectives that bring values to the host.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize() -> None:
    """Join the run's other processes, if the environment names any (see the module docstring)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        try:
            count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise SystemExit("error: JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be "
                             "integers too")
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def is_main() -> bool:
    """Whether this process writes the run's files."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (all of them learn it): a signal that reaches one host stops all of
    them at the same chunk."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def from_main(tree):
    """Process 0's value of `tree` (numpy leaves, the same shapes on every process), on every process."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.broadcast_one_to_all(tree)
