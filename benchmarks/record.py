"""One place for what every benchmark row carries (date, device, the exact command), the CPU's bfloat16 flags, and how
a row is appended."""

import csv
import datetime
import fcntl
import os
import platform
import shlex
import sys
from pathlib import Path

import jax


def provenance() -> dict:
    return dict(date=datetime.date.today().isoformat(), device=str(jax.devices()[0]),
                cpu=platform.processor() or platform.machine(), command="python " + shlex.join(sys.argv))


# /proc/cpuinfo flags that say whether a CPU multiplies bfloat16 natively: AVX-512, its BF16 extension, AMX-BF16.
BF16_CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    """Whether the CPU reports each of BF16_CPU_FLAGS (all False where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    reported = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return {flag: flag in reported for flag in BF16_CPU_FLAGS}


def append_row(path: str | Path, row: dict) -> None:
    """Append to a CSV, writing the header when the file is empty; under a file lock, as several processes may
    append to one CSV at once (benchmarks/gpu_check.sh's compile stage)."""
    print(row, flush=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0, os.SEEK_END)
        writer = csv.DictWriter(file, fieldnames=list(row))
        if file.tell() == 0:
            writer.writeheader()
        writer.writerow(row)
        file.flush()
