"""The run around the core: flags and presets, the command line, the host loop and its callbacks (metrics, evaluation,
checkpoints, the stop request), resuming, logging, several processes, videos, `--play` and the exported policy."""
