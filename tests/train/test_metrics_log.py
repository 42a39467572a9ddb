"""MetricsLog on a resume: metrics.jsonl keeps one line per step, whatever the crash left behind."""

from __future__ import annotations

import json
from pathlib import Path

from cafe_train.metrics_log import METRICS_NAME, MetricsLog


def steps_in(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / METRICS_NAME).read_text().splitlines()]


def crashed_run(run_dir: Path, last_step: int) -> None:
    """A run that logged steps 1..last_step, then died in the middle of writing the next line."""
    with MetricsLog(run_dir) as log:
        for step in range(1, last_step + 1):
            log.scalars(step, {"loss": 1.0 / step, "grad_norm": None})
    with open(run_dir / METRICS_NAME, "a") as metrics:
        metrics.write(json.dumps({"step": last_step + 1, "loss": 0.5})[:-6])  # no closing brace, no newline


def test_a_resume_drops_the_lines_it_will_log_again(tmp_path: Path) -> None:
    crashed_run(tmp_path, last_step=7)
    with MetricsLog(tmp_path, resume_step=5) as log:  # the last checkpoint was step 5
        assert steps_in(tmp_path) == [1, 2, 3, 4, 5]
        for step in (6, 7, 8):
            log.scalars(step, {"loss": 0.5, "grad_norm": 2.0})
    assert steps_in(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]
    first = json.loads((tmp_path / METRICS_NAME).read_text().splitlines()[0])
    assert first == {"step": 1, "loss": 1.0, "grad_norm": None}  # kept lines are kept as written
    assert not list(tmp_path.glob("*.tmp"))


def test_a_restart_without_a_checkpoint_starts_the_log_afresh(tmp_path: Path) -> None:
    crashed_run(tmp_path, last_step=3)
    with MetricsLog(tmp_path, resume_step=0) as log:
        assert steps_in(tmp_path) == []
        log.scalars(1, {"loss": 0.9})
    assert steps_in(tmp_path) == [1]


def test_a_clean_log_is_left_as_it_is(tmp_path: Path) -> None:
    with MetricsLog(tmp_path) as log:
        for step in (1, 2):
            log.scalars(step, {"loss": 0.1})
    before = (tmp_path / METRICS_NAME).stat()
    with MetricsLog(tmp_path, resume_step=2):
        pass
    after = (tmp_path / METRICS_NAME).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
