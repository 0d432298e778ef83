"""Attributes JAX's compile time to the pytest test that caused it, in every process of a suite run (pytest, its
xdist workers and the subprocesses the tests start, which inherit PYTEST_CURRENT_TEST):

    COMPILE_TIME_DIR=/tmp/compile PYTHONPATH=benchmarks/suite_compile_time python -m pytest -q -n 2 --dist loadfile tests

Python imports this module at start-up when its folder is on PYTHONPATH. Each process appends
`test<TAB>event<TAB>seconds<TAB>program` rows to COMPILE_TIME_DIR/<pid>.tsv when it exits (a process killed by a signal writes
nothing). Events: tracing, lowering to MLIR, XLA's backend compile, and the compile time that a persistent-cache hit
saved. benchmarks/results/test_suite/README.md sums them."""

import atexit
import os

OUT = os.environ.get("COMPILE_TIME_DIR")
EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
          "/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/compilation_cache/compile_time_saved_sec")

if OUT:
    import jax.monitoring

    rows = []

    def listen(event, duration, fun_name="-", **_):
        if event in EVENTS:
            test = os.environ.get("PYTEST_CURRENT_TEST", "-").split(" (")[0]
            rows.append(f"{test}\t{event.rsplit('/', 1)[1]}\t{duration:.4f}\t{fun_name}\n")

    def dump():
        if rows:
            with open(os.path.join(OUT, f"{os.getpid()}.tsv"), "a") as f:
                f.writelines(rows)

    jax.monitoring.register_event_duration_secs_listener(listen)
    atexit.register(dump)
