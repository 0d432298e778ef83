"""Run-output layer: run directory, config, CSVs, TensorBoard, wandb guard, learning curve."""

import csv
import json
import re
import struct
import sys
import time
import types
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from common.run import logger as logger_mod
from common.run.cli import require_wandb
from common.run.logger import RunLogger, make_run_dir
from common.run.plotting import read_eval_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_COLUMNS = ["step", "mode", "return_mean", "return_std", "return_min", "return_max", "num_episodes", "returns"]


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def run(tmp_path):
    run_logger = RunLogger(tmp_path / "run", {"seed": 1}, total_steps=1000)
    yield run_logger
    run_logger.close()


def test_run_dir_name_and_uniqueness(tmp_path, monkeypatch):
    # a frozen clock forces the same-second collision that the suffix exists for
    monkeypatch.setattr(logger_mod.time, "strftime", lambda fmt: "20250102-030405")
    dirs = [make_run_dir(tmp_path / "runs", "cheetah-run", "dm_control", "flowrl", 7) for _ in range(3)]
    assert [d.name for d in dirs] == [
        "cheetah-run__dm_control__flowrl__7__20250102-030405",
        "cheetah-run__dm_control__flowrl__7__20250102-030405_1",
        "cheetah-run__dm_control__flowrl__7__20250102-030405_2",
    ]
    assert all(d.is_dir() and d.parent == tmp_path / "runs" for d in dirs)


def test_run_dir_uses_current_time(tmp_path):
    name = make_run_dir(str(tmp_path), "Hopper-v4", "gymnasium", "sac", 0).name
    assert re.fullmatch(r"Hopper-v4__gymnasium__sac__0__\d{8}-\d{6}", name)


def test_config_json_round_trip(tmp_path):
    config = {"lr": 3e-4, "env": "CheetahRun", "hidden": [256, 256], "wandb": False, "nested": {"b": None, "a": 1},
              "out": tmp_path / "x"}
    RunLogger(tmp_path, config, total_steps=10).close()
    text = (tmp_path / "config.json").read_text()
    assert json.loads(text) == {**config, "out": str(tmp_path / "x")}
    assert re.findall(r'^  "(\w+)":', text, flags=re.M) == sorted(config)  # top-level keys, sorted


def test_metrics_csv_header_missing_and_unknown_keys(run):
    path = run.run_dir / "metrics.csv"
    run.log_train(0, {"loss": 1.5, "q": np.float32(0.25)})
    assert read_rows(path) == [["step", "loss", "q"], ["0", "1.5", "0.25"]]  # on disk before close()
    run.log_train(10, {"loss": 0.5})
    assert read_rows(path)[-1] == ["10", "0.5", ""]
    with pytest.raises(ValueError, match="new_metric"):
        run.log_train(20, {"loss": 0.1, "new_metric": 2.0})
    assert len(read_rows(path)) == 3  # the rejected row wrote nothing


def test_resume_appends_under_the_files_header_and_extends_it_for_new_metrics(tmp_path):
    first = RunLogger(tmp_path, {}, total_steps=100)
    first.log_train(0, {"loss": 1.0, "q": 2.0})
    first.log_eval(0, np.array([1.0, 2.0]), "deterministic")
    first.close()
    second = RunLogger(tmp_path, {}, total_steps=100)
    second.log_train(50, {"q": 3.0})
    second.log_eval(50, np.array([3.0]), "deterministic")
    assert read_rows(tmp_path / "metrics.csv") == [["step", "loss", "q"], ["0", "1.0", "2.0"], ["50", "", "3.0"]]
    second.log_train(60, {"q": 4.0, "extra": 1.0})  # code that logs a metric more than the code that began the run
    second.log_train(70, {"extra": 5.0})
    second.close()
    assert read_rows(tmp_path / "metrics.csv") == [["step", "loss", "q", "extra"], ["0", "1.0", "2.0", ""],
                                                   ["50", "", "3.0", ""], ["60", "", "4.0", "1.0"], ["70", "", "", "5.0"]]
    eval_rows = read_rows(tmp_path / "eval.csv")
    assert [r[0] for r in eval_rows] == ["step", "0", "50"]


def test_eval_csv_and_learning_curve(run):
    returns = np.array([1.0, 2.0, 3.0, 1234567.891])
    summary = run.log_eval(100, returns, "deterministic")
    assert summary == pytest.approx({"return_mean": returns.mean(), "return_std": returns.std(),
                                     "return_min": 1.0, "return_max": 1234567.891, "num_episodes": 4})
    rows = read_rows(run.run_dir / "eval.csv")
    assert rows[0] == EVAL_COLUMNS
    assert rows[1][:2] == ["100", "deterministic"] and rows[1][6] == "4"
    assert rows[1][7] == "1 2 3 1.23457e+06"
    assert float(rows[1][2]) == pytest.approx(returns.mean())

    for step in (200, 300):
        run.log_eval(step, np.array([step, step + 10.0]), "deterministic")
        run.log_eval(step, np.array([step / 2]), "stochastic")
    data = read_eval_csv(run.run_dir / "eval.csv")
    stochastic = data["mode"] == "stochastic"
    assert data["step"][stochastic].tolist() == [200, 300]
    assert data["return_mean"][stochastic].tolist() == [100.0, 150.0]
    assert data["return_std"][~stochastic][1:].tolist() == [5.0, 5.0]

    png = run.close(curve_title="CheetahRun flowrl")
    assert png == run.run_dir / "learning_curve.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000  # axes, labels, two curves: far more than a blank image
    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500 and pixels.std() > 0.05
    assert run.close() == png  # a second close is a no-op


def test_close_without_eval_rows_returns_none(run):
    run.log_train(0, {"loss": 1.0})
    assert run.close() is None
    assert run.close() is None
    assert not (run.run_dir / "learning_curve.png").exists()


def test_close_after_exception(tmp_path):
    run_logger = RunLogger(tmp_path, {}, total_steps=100)
    with pytest.raises(RuntimeError):
        try:
            run_logger.log_eval(10, [5.0, 7.0], "deterministic")
            raise RuntimeError("training crashed")
        finally:
            png = run_logger.close()
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_tensorboard_event_file(run):
    run.log_train(0, {"actor_loss": 0.5})
    run.log_eval(0, np.array([1.0]), "deterministic")
    run.close()
    events = list((run.run_dir / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    content = events[0].read_bytes()
    assert b"train/actor_loss" in content and b"eval/deterministic/return_mean" in content


def read_events(path: Path) -> list[Event]:
    """The events of one TensorBoard file: TFRecords of (length u64, crc u32, payload, crc u32)."""
    data, events, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        events.append(Event.FromString(data[offset + 12:offset + 12 + length]))
        offset += 12 + length + 4
    return events


def test_resumed_run_tells_tensorboard_to_hide_the_steps_it_logs_again(tmp_path):
    first = RunLogger(tmp_path, {}, total_steps=100)
    for step in (0, 10, 20):
        first.log_train(step, {"loss": 1.0})
    first.close()
    time.sleep(1.1)  # tensorboardX names event files by the second; a real resume comes far later
    second = RunLogger(tmp_path, {}, total_steps=100, resume_step=10)
    second.log_train(20, {"loss": 2.0})
    second.close()
    first_file, second_file = sorted((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert [e.step for e in read_events(first_file) if e.summary.value] == [0, 10, 20]
    events = read_events(second_file)
    # TensorBoard drops earlier events at or after a START marker's step: here the first attempt's step 20.
    (start,) = [e for e in events if e.session_log.status == SessionLog.START]
    assert start.step == 11
    assert [e.step for e in events if e.summary.value] == [20]


def test_fresh_run_purges_nothing(run):
    run.log_train(0, {"loss": 1.0})
    run.close()
    (path,) = (run.run_dir / "tb").glob("events.out.tfevents.*")
    assert not [e for e in read_events(path) if e.session_log.status == SessionLog.START]


def test_progress_bar_advance(run):
    run.advance(250, {"return": 123.456789, "phase": "warmup"})
    run.advance(400)
    assert run.bar.n == 400 and run.bar.total == 1000
    assert "return=123.5" in run.bar.postfix and "phase=warmup" in run.bar.postfix


def test_require_wandb_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # None in sys.modules makes `import wandb` fail
    with pytest.raises(ValueError, match="--wandb"):
        require_wandb()


def test_wandb_calls(tmp_path, monkeypatch):
    calls = []
    fake_run = types.SimpleNamespace(log=lambda data, step: calls.append(("log", step, data)),
                                     finish=lambda: calls.append(("finish",)))
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or fake_run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    require_wandb()  # present: no error

    run_logger = RunLogger(tmp_path, {"lr": 1e-3}, total_steps=10, use_wandb=True, wandb_project="proj")
    run_logger.log_train(5, {"loss": 2.0})
    run_logger.close()
    run_logger.close()
    assert calls[0][0] == "init" and calls[0][1]["project"] == "proj" and calls[0][1]["config"] == {"lr": 1e-3}
    assert calls[1:] == [("log", 5, {"train/loss": 2.0}), ("finish",)]


def test_eval_success_sits_beside_the_return_only_for_tasks_that_report_it(tmp_path):
    scored = RunLogger(tmp_path / "scored", {}, total_steps=10)
    summary = scored.log_eval(10, np.array([-5.0, -3.0, -1.0, 0.0]), "stochastic", success=np.array([1, 0, 1, 1.0]))
    assert summary["success_rate"] == 0.75
    scored.close()
    header, row = read_rows(tmp_path / "scored" / "eval.csv")
    assert header[2:4] == ["return_mean", "success_rate"] and header[-2:] == ["returns", "successes"]
    assert row[3] == "0.75" and row[-1] == "1 0 1 1"
    np.testing.assert_array_equal(read_eval_csv(tmp_path / "scored" / "eval.csv")["success_rate"], [0.75])

    unscored = RunLogger(tmp_path / "unscored", {}, total_steps=10)
    assert "success_rate" not in unscored.log_eval(10, np.array([1.0]), "stochastic", success=np.array([np.nan]))
    unscored.close()
    assert read_rows(tmp_path / "unscored" / "eval.csv")[0] == EVAL_COLUMNS
    assert np.isnan(read_eval_csv(tmp_path / "unscored" / "eval.csv")["success_rate"]).all()
