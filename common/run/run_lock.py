"""One writer per run directory: an exclusive lock that the OS releases when its process dies, so a `kill -9`
leaves no stale lock behind."""

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLocked(ValueError):
    """Another live process holds the run directory."""


def lock_run_dir(run_dir: Path):
    """Hold run_dir's lock for the life of this process (keep the returned file open); raise RunLocked naming the
    holder if another process has it."""
    path = Path(run_dir) / LOCK_NAME
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(f"{run_dir} is in use by {holder}; one process at a time writes a run") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle
