"""Run outputs: run directory, config.json, metrics/eval CSVs, TensorBoard, optional wandb, progress bar."""

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from common.run.plotting import plot_learning_curve, read_eval_csv


def make_run_dir(root: str | Path, env_name: str, backend: str, algo: str, seed: int | str) -> Path:
    """Create root/<env>__<backend>__<algo>__<seed>__<YYYYmmdd-HHMMSS> (seed: one, or `first-last`), with a _N suffix
    if that name is taken."""
    base = f"{env_name}__{backend}__{algo}__{seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = Path(root) / base, 0
    while True:
        try:
            # exist_ok=False makes the check and the creation one step: two runs started
            # in the same second never share a directory.
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = Path(root) / f"{base}_{n}"


class _CsvLog:
    """Append-only CSV whose header is fixed by the first row ever written, or by the file when resuming. A resumed
    file's header grows when a row brings columns it lacks (code that logs more metrics than the code that started
    the run): the file is rewritten once, its earlier rows with those cells empty. In a run's own file a new column
    is a bug, and is refused."""

    def __init__(self, path: Path, keep_through_step: int | None = None):
        self.path = path
        self.columns = None
        self.resumed = path.exists() and path.stat().st_size > 0
        if self.resumed:
            with path.open(newline="") as f:
                self.columns, *rows = list(csv.reader(f))
            if keep_through_step is not None:  # resuming: drop the rows logged after the checkpoint
                kept = [row for row in rows if int(row[0]) <= keep_through_step]
                temporary = path.with_suffix(".tmp")
                with temporary.open("w", newline="") as f:
                    csv.writer(f).writerows([self.columns, *kept])
                temporary.replace(path)
        self.file = path.open("a", newline="")
        self.writer = csv.writer(self.file)

    def write(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.writer.writerow(self.columns)
        added = [k for k in row if k not in self.columns]
        if added and not self.resumed:  # a new column would be silently dropped or would shift the others
            raise ValueError(f"{self.path.name}: {added} not in its header {self.columns} (fixed by the first row)")
        if added:
            self._extend_header(added)
        self.writer.writerow([row.get(k, "") for k in self.columns])
        self.file.flush()  # a killed run keeps every row written so far

    def _extend_header(self, added: list[str]) -> None:
        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        self.columns = self.columns + added
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", newline="") as f:
            csv.writer(f).writerows([self.columns, *(row + [""] * len(added) for row in rows)])
        temporary.replace(self.path)  # atomic: a kill leaves the old file or the new one, never half of either
        self.file = self.path.open("a", newline="")
        self.writer = csv.writer(self.file)

    def close(self) -> None:
        self.file.close()


def eval_summary(returns: np.ndarray, success: np.ndarray | None = None) -> dict[str, float]:
    """An eval row's figures; success_rate beside the mean return where episodes are scored by success."""
    return {"return_mean": float(returns.mean()),
            **({"success_rate": float(np.mean(success))} if success is not None else {}),
            "return_std": float(returns.std()), "return_min": float(returns.min()), "return_max": float(returns.max()),
            "num_episodes": len(returns)}


class QuietLogger:
    """RunLogger's interface, writing nothing: the logger of a run's processes other than 0, which alone writes the
    run directory (common.run.processes)."""

    def log_train(self, step: int, metrics: dict[str, float], seed: int | None = None) -> None:
        pass

    def log_eval(self, step: int, returns: np.ndarray, mode: str, seed: int | None = None,
                 success: np.ndarray | None = None) -> dict[str, float]:
        return eval_summary(np.asarray(returns, dtype=np.float64).ravel())

    def note(self, message: str, steady_from: int | None = None) -> None:
        pass

    def advance(self, step: int, postfix: dict[str, float | str] | None = None) -> None:
        pass

    def close(self, curve_title: str | None = None) -> None:
        pass


class RunLogger:
    """Everything one training run writes: run_dir/{config.json, metrics.csv, eval.csv, tb/, learning_curve.png}."""

    def __init__(
        self,
        run_dir: Path,
        config: dict,
        total_steps: int,
        use_wandb: bool = False,
        wandb_project: str = "flowrl-jax",
        resume_step: int | None = None,
        num_seeds: int = 1,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # default=str: Paths and other non-JSON values in the resolved config are kept as text
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        self._wandb = None
        if use_wandb:
            import wandb

            self._wandb = wandb.init(
                project=wandb_project, name=self.run_dir.name, config=config, dir=str(self.run_dir)
            )
        self._metrics = _CsvLog(self.run_dir / "metrics.csv", resume_step)
        self._eval = _CsvLog(self.run_dir / "eval.csv", resume_step)
        # A resumed run re-logs the steps after its checkpoint; purge_step makes TensorBoard hide the first attempt's
        # events from that step on, as the CSVs drop their rows.
        self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)
        self.bar = tqdm(
            total=total_steps,
            initial=resume_step or 0,  # a resumed run's bar starts where it left off
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            smoothing=0,  # rate = steps since `steady_from` / time since then (see `note`), not a decaying average
            # redirected output (CI, nohup) gets a line every 30 s instead of ten a second
            mininterval=0.1 if sys.stderr.isatty() else 30,
        )
        self._closed, self._curve = False, None
        self._num_seeds = num_seeds

    def _tag(self, group: str, name: str, seed: int | None) -> str:
        """TensorBoard/W&B tag; seeds get their own tags only when a run trains several."""
        return f"{group}/{name}" if seed is None or self._num_seeds == 1 else f"seed_{seed}/{group}/{name}"

    def log_train(self, step: int, metrics: dict[str, float], seed: int | None = None) -> None:
        step = int(step)
        metrics = {k: float(v) for k, v in metrics.items()}
        seed_column = {} if seed is None else {"seed": int(seed)}
        # NaN means "no value in this row" (e.g. no episode ended in the chunk): an empty cell, no scalar.
        self._metrics.write({"step": step, **seed_column, **{k: "" if np.isnan(v) else v for k, v in metrics.items()}})
        metrics = {self._tag("train", k, seed): v for k, v in metrics.items() if not np.isnan(v)}
        for tag, v in metrics.items():
            self._tb.add_scalar(tag, v, step)
        if self._wandb:
            self._wandb.log(metrics, step=step)

    def log_eval(self, step: int, returns: np.ndarray, mode: str, seed: int | None = None,
                 success: np.ndarray | None = None) -> dict[str, float]:
        """One eval row. `success` (per episode, 1/0; NaN where the task reports none) adds success_rate beside the
        return and each episode's success after the returns."""
        step, returns = int(step), np.asarray(returns, dtype=np.float64).ravel()
        scored = success is not None and not np.isnan(success).any()
        summary = eval_summary(returns, success if scored else None)
        episodes = {"returns": " ".join(f"{r:.6g}" for r in returns)}
        if scored:
            episodes["successes"] = " ".join(str(int(s)) for s in np.ravel(success))
        seed_column = {} if seed is None else {"seed": int(seed)}
        self._eval.write({"step": step, **seed_column, "mode": mode, **summary, **episodes})
        # the mode is part of the tag: two eval modes at one step would otherwise overwrite each other
        tagged = {self._tag("eval", f"{mode}/{k}", seed): v for k, v in summary.items()}
        for tag, v in tagged.items():
            self._tb.add_scalar(tag, v, step)
        if self._wandb:
            self._wandb.log(tagged, step=step)
        return summary

    def note(self, message: str, steady_from: int | None = None) -> None:
        """A line above the progress bar. `steady_from`: the rate and ETA count only steps after this one (the
        first chunk's compile would otherwise inflate the ETA)."""
        self.bar.write(message, file=sys.stderr)
        if steady_from is not None:
            self.bar.initial, self.bar.start_t = steady_from, time.time()

    def log_video(self, step: int, path: Path, preview: np.ndarray) -> None:
        """An evaluation video: W&B (when on) gets the mp4; TensorBoard a strip of its frames [H, W, 3], as its own
        video summary needs moviepy (docs/videos.md)."""
        self._tb.add_image("eval/video_frames", preview, int(step), dataformats="HWC")
        if self._wandb:
            import wandb

            self._wandb.log({"eval/video": wandb.Video(str(path), format="mp4")}, step=int(step))

    def advance(self, step: int, postfix: dict[str, float | str] | None = None) -> None:
        if postfix:
            # set before update() so that the refresh update() triggers already shows it
            short = {k: v if isinstance(v, str) else f"{float(v):.4g}" for k, v in postfix.items()}
            self.bar.set_postfix(short, refresh=False)
        self.bar.update(int(step) - self.bar.n)

    def close(self, curve_title: str | None = None) -> Path | None:
        if self._closed:
            return self._curve
        self._closed = True
        self.bar.close()
        self._metrics.close()
        self._eval.close()
        self._tb.close()
        if self._wandb:
            self._wandb.finish()
        eval_csv = self.run_dir / "eval.csv"
        if len(read_eval_csv(eval_csv)["step"]):
            print("drawing the learning curve", file=sys.stderr, flush=True)
            png = self.run_dir / "learning_curve.png"
            self._curve = plot_learning_curve(eval_csv, png, curve_title or self.run_dir.name)
        return self._curve
