"""metrics.csv across resumes: the rows a resumed run does not log again are set aside before Lightning's
CSVLogger deletes the file, and put back in front when the run ends, each step's rows once."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from pretrain.distributed import METRICS_BEFORE_RESUME, merge_metrics, set_aside_metrics


def log_steps(log_dir: Path, steps) -> None:
    """What Lightning's CSVLogger leaves once a run has logged `steps`: it deletes the file it finds first.
    Every step has a train row; every second one also a held-out row, as HeldoutValidation logs them."""
    metrics = log_dir / "version_0" / "metrics.csv"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    with open(metrics, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "train/loss", "val/loss"])
        writer.writeheader()
        for step in steps:
            writer.writerow({"step": step, "train/loss": 10 - step / 10})
            if step % 2 == 0:
                writer.writerow({"step": step, "val/loss": 11 - step / 10})


def rows_per_step(log_dir: Path) -> Counter:
    """(step, kind of row) -> how often the finished metrics.csv has it."""
    with open(log_dir / "version_0" / "metrics.csv", newline="") as handle:
        return Counter((int(row["step"]), "val" if row["val/loss"] else "train") for row in csv.DictReader(handle))


def each_once(steps) -> Counter:
    return Counter([(step, "train") for step in steps] + [(step, "val") for step in steps if step % 2 == 0])


def test_a_resume_that_dies_before_the_logger_starts_leaves_each_step_once(tmp_path):
    """Killed, or a DDP start-up that failed, after setting aside but before the CSVLogger deleted metrics.csv:
    the next resume finds both files and must not set the same steps aside twice."""
    logs = tmp_path / "logs"
    log_steps(logs, range(1, 7))  # killed at step 6; the last checkpoint is at step 4
    set_aside_metrics(logs, 4)  # resume 1 dies here: metrics.csv is still the killed run's
    set_aside_metrics(logs, 4)  # resume 2
    log_steps(logs, range(5, 11))
    merge_metrics(logs)
    assert rows_per_step(logs) == each_once(range(1, 11))
    assert not (logs / METRICS_BEFORE_RESUME).exists()


def test_resumes_after_normal_stops_keep_each_steps_rows_once(tmp_path):
    """Preempted twice, each time with rows logged past the checkpoint it resumes from: those are dropped
    and logged again by the resumed run, and both rows of a step (train, held-out) are kept."""
    logs = tmp_path / "logs"
    log_steps(logs, range(1, 6))
    set_aside_metrics(logs, 4)
    log_steps(logs, range(5, 9))
    set_aside_metrics(logs, 8)
    log_steps(logs, range(9, 13))
    merge_metrics(logs)
    assert rows_per_step(logs) == each_once(range(1, 13))


def test_a_merge_cut_short_before_the_set_aside_file_went_leaves_each_step_once(tmp_path):
    """Killed after merging but before publishing (during the export): the next attempt resumes from the
    final checkpoint, logs nothing new, and finds both the merged metrics.csv and the set-aside rows."""
    logs = tmp_path / "logs"
    log_steps(logs, range(1, 4))
    set_aside_metrics(logs, 2)
    log_steps(logs, range(3, 7))
    aside = (logs / METRICS_BEFORE_RESUME).read_text()
    merge_metrics(logs)
    (logs / METRICS_BEFORE_RESUME).write_text(aside)  # killed between writing metrics.csv and removing this
    set_aside_metrics(logs, 6)  # the CSVLogger then deletes metrics.csv and, at the last step, logs nothing
    (logs / "version_0" / "metrics.csv").unlink()
    merge_metrics(logs)
    assert rows_per_step(logs) == each_once(range(1, 7))


def test_a_write_cut_short_leaves_the_previous_rows_whole(tmp_path, monkeypatch):
    """A kill (or a full disk) while the rows are written: the previous file stays as it was."""
    logs = tmp_path / "logs"
    log_steps(logs, range(1, 5))
    set_aside_metrics(logs, 4)
    before = (logs / METRICS_BEFORE_RESUME).read_text()
    log_steps(logs, range(5, 9))

    def killed(self, rows):
        raise KeyboardInterrupt("killed mid-write")

    with monkeypatch.context() as cut:
        cut.setattr(csv.DictWriter, "writerows", killed)
        with pytest.raises(KeyboardInterrupt):
            set_aside_metrics(logs, 8)
        with pytest.raises(KeyboardInterrupt):
            merge_metrics(logs)
    assert (logs / METRICS_BEFORE_RESUME).read_text() == before
    assert rows_per_step(logs) == each_once(range(5, 9))
    set_aside_metrics(logs, 8)  # the next attempt: its write goes through, the leftover goes
    log_steps(logs, range(9, 11))
    merge_metrics(logs)
    assert rows_per_step(logs) == each_once(range(1, 11))
    assert sorted(path.name for path in logs.rglob("*") if path.is_file()) == ["metrics.csv"]
