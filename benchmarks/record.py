"""One place for what every benchmark row carries (date, device, the exact command) and how it is appended."""

import csv
import datetime
import platform
import shlex
import sys
from pathlib import Path

import jax


def provenance() -> dict:
    return dict(date=datetime.date.today().isoformat(), device=str(jax.devices()[0]),
                cpu=platform.processor() or platform.machine(), command="python " + shlex.join(sys.argv))


def append_row(path: str | Path, row: dict) -> None:
    """Append to a CSV, writing the header when the file is new."""
    print(row, flush=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow(row)
