"""Test-session setup: a persistent XLA compilation cache shared by the in-process tests and their subprocesses.

Compiling an MJX env step costs tens of seconds on a 2-core CPU; the cache lets a subprocess that builds the same
program as an earlier test (the env reset, the evaluator) load it instead of compiling it again.
"""

import os
import tempfile

import jax

# As common/__init__.py does, before any test module imports MuJoCo (which fixes its GL backend on import).
os.environ.setdefault("MUJOCO_GL", "egl")
CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "flowrl-jax-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
