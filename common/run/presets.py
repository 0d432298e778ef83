"""Presets: named sets of flag values per benchmark family, kept as data (`--preset NAME`).

A preset's values replace the script's defaults before the command line is read, so every flag given on the command
line wins over them; config.json records the preset's name beside the resolved values. A value applies where the
script has that flag (`target_rate` and `expectile` are FlowRL's, for example); `tests/test_presets.py` checks that
each flag of each preset belongs to one of the scripts.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Preset:
    description: str
    flags: dict[str, Any]  # flag (field name) -> value, for every task
    by_backend: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # backend -> more flags
    by_task: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # canonical task name -> more flags

    def values(self, task_name: str, backend: str) -> dict[str, Any]:
        """The preset's flag values for one task (task values over backend values over the common ones)."""
        return {**self.flags, **self.by_backend.get(backend, {}), **self.by_task.get(task_name, {})}


# Playground trains these DM Control tasks for 10 M env steps and the others for 5 M
# (mujoco_playground/config/dm_control_suite_params.py, brax_sac_config).
PLAYGROUND_10M_TASKS = ("acrobot-swingup", "acrobot-swingup-sparse", "cheetah-run", "finger-spin", "finger-turn-easy",
                        "finger-turn-hard", "hopper-hop", "hopper-stand", "humanoid-walk", "swimmer-swimmer6",
                        "walker-run")

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        description="the FlowRL reference code's protocol: one env, one update per env step, batch 256, replay 1 M, "
                    "5 000 random steps, ρ = 0.95, a fresh x_0 every step, expectile 0.9 (0.8 on MyoSuite, as the "
                    "reference recommends for tasks it was not tuned on), an evaluation of 5 episodes every 10 000 "
                    "steps",
        flags=dict(num_envs=1, updates_per_iteration=1, batch_size=256, buffer_size=1_000_000, start_steps=5_000,
                   eval_interval=10_000, eval_episodes=5, target_rate=0.95, x0_hold=1, expectile=0.9),
        by_backend={"myosuite": dict(expectile=0.8)},
    ),
    "playground-sac": Preset(
        description="MuJoCo Playground's SAC configuration for DM Control: 128 envs, 8 updates per env step, batch "
                    "512, replay 4 M, 8 192 random steps, learning rate 1e-3, observation normalisation, and "
                    "Playground's env steps per task (10 M or 5 M)",
        flags=dict(num_envs=128, updates_per_iteration=8, batch_size=512, buffer_size=4_194_304, start_steps=8_192,
                   learning_rate=1e-3, normalize_observations=True, gamma=0.99, total_steps=5_000_000),
        by_task={task: dict(total_steps=10_000_000) for task in PLAYGROUND_10M_TASKS},
    ),
}


def help_text() -> str:
    """What `--help` says of --preset."""
    return "Named flag values, applied before the flags given (which win): " + "; ".join(
        f"`{name}`: {preset.description}" for name, preset in PRESETS.items()) + ". docs/flags.md lists them."
