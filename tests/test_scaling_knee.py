"""The knee of the scaling curve (benchmarks/throughput.py), on synthetic timings with a known answer."""

import pytest

from benchmarks.throughput import knee


def rows(num_envs, seconds_per_env=1e-3, update_seconds=0.1):
    """One iteration = E env steps at `seconds_per_env` each + one update of `update_seconds`."""
    return [dict(num_envs=e, updates_per_iteration=1, update_only_per_s=1 / update_seconds,
                 env_steps_per_s=e / (e * seconds_per_env + update_seconds)) for e in num_envs]


def test_knee_is_where_env_stepping_takes_as_long_as_the_updates():
    # env time 1 ms × E equals the 100 ms update at E = 100; env/update time is ∝ E, so log-log interpolation is exact
    assert knee(rows([1, 10, 1000, 4096])) == pytest.approx(100, rel=1e-9)
    assert knee(rows([4, 16, 64, 256], seconds_per_env=2e-3)) == pytest.approx(50, rel=1e-9)


def test_no_knee_when_the_measured_range_does_not_cross_it():
    assert knee(rows([1, 4, 16])) is None  # updates dominate throughout
    assert knee(rows([1000, 4000])) is None  # env stepping dominates throughout
