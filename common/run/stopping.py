"""SIGINT and SIGTERM, answered within a second at any moment of a run.

Python runs a signal handler only between bytecodes of the main thread, and the main thread can sit inside one XLA
compile or one compiled chunk for minutes. So the handlers only record the signal, and C's handler also writes its
number to a pipe (`signal.set_wakeup_fd`) that a watcher thread reads at once:
- nothing new to save (still starting up, compiling, or no chunk finished since the last checkpoint): say so and
  exit at once with 128 + the signal number;
- otherwise: say that the current chunk finishes (and about how long that takes), then a checkpoint is written; the
  training loop sees `requested` after its chunk, saves and exits with 128 + the signal number;
- a second signal: exit at once. The last good checkpoint and every metrics row written so far stay (rows are
  flushed as they are written; checkpoints are written atomically).
A process of a run of several processes (`peers`) never leaves alone on a first signal, since that would take the
others down: it stops with them after the next chunk, with a checkpoint, even where nothing was new to save.
"""

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopWatcher:
    """Installed once per process, before anything slow; the training loop tells it what a stop would lose."""

    def __init__(self, peers: bool = False):
        self.peers = peers                 # other processes share the run (common.run.processes)
        self.requested: int | None = None  # the first signal's number, once it is answered after a chunk
        self.unsaved = False               # a chunk finished since the last checkpoint
        self.chunk_seconds: float | None = None
        self.last_checkpoint = None
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        for sig in SIGNALS:
            signal.signal(sig, lambda signum, frame: None)  # the watcher thread acts; this only keeps the process up
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_end,), name="stop-watcher", daemon=True).start()

    def _watch(self, read_end: int) -> None:
        while True:
            for signum in os.read(read_end, 16):
                if signum in SIGNALS:
                    self._answer(signal.Signals(signum))

    def _answer(self, signum: signal.Signals) -> None:
        if self.requested is not None:
            self._exit(signum, f"{signum.name} again: stopping now; last good checkpoint: "
                                f"{self.last_checkpoint or 'none was written yet'}")
        if not self.unsaved and not self.peers:
            where = f"the last checkpoint ({self.last_checkpoint})" if self.last_checkpoint else "the start"
            self._exit(signum, f"{signum.name}: nothing new to save since {where}; exiting")
        self.requested = signum
        if self.chunk_seconds is None:
            wait = "the first chunk (after compiling; the run's other processes stop with this one)"
        else:
            wait = f"the current chunk (about {self.chunk_seconds:.0f} s)"
        print(f"\n{signum.name}: finishing {wait}, then writing a checkpoint and exiting with {128 + signum}; send it "
              f"again to stop at once", file=sys.stderr, flush=True)

    @staticmethod
    def _exit(signum: signal.Signals, message: str) -> None:
        print(f"\n{message}", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def saved(self, path) -> None:
        self.unsaved, self.last_checkpoint = False, path

    def chunk_done(self, seconds: float) -> None:
        self.unsaved, self.chunk_seconds = True, seconds


class _NoWatcher:
    """What `current` gives where no watcher was installed (a run started from Python, not a script): signals keep
    their usual meaning, and the loop never sees a request."""

    requested = None

    def saved(self, path) -> None:
        pass

    def chunk_done(self, seconds: float) -> None:
        pass


_watcher: StopWatcher | None = None


def install(peers: bool = False) -> StopWatcher:
    """The process's watcher, installed once, from the main thread, before anything slow; `peers`: other processes
    share the run."""
    global _watcher
    if _watcher is None:
        _watcher = StopWatcher(peers)
    return _watcher


def current() -> StopWatcher | _NoWatcher:
    return _watcher or _NoWatcher()
