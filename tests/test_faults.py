"""Faults during work: a search killed (SIGINT, SIGKILL) at each stage, or stopped by a full disk at each kind of write,
ends, run again with the same command, with the report an uninterrupted run of its config writes.

Each search is a subprocess of `FAULTY` below: the CLI with one fault planted by the test (autocomp has no hooks). The
runs take about a minute and a half of CPU, so the four series (uninterrupted, SIGINT, SIGKILL, full disk) run two at
a time."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 2, "batch_size": 128, "lr": 0.1},  # two epochs: a kill after the first checkpoint
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "tpe", "trials": 3, "reference": False},
    "evaluator": {"fidelity": "bn", "bn_batches": 2, "batch_size": 128, "val_examples": 200},
    "finetune": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "device": "cpu",
    "threads": 1,
}

FAULTY = '''
"""`autocomp` with one planted fault: $FAULT_SIGNAL sent to itself at $FAULT_STAGE (baseline: after the baseline's
first checkpoint; trial: as the second candidate is recalibrated; finetune: after the final fine-tune's first
checkpoint; report: as the report draws its second figure), or a full disk for the files written whose path matches
$FAULT_FULL ("study": SQLite's full disk as Optuna writes the second trial)."""

import builtins
import errno
import fnmatch
import os
import signal
import sqlite3

import optuna
import sqlalchemy

import autocomp.app.cli
import autocomp.evaluate.evaluator as evaluator
import autocomp.app.report.plots as plots

STAGE, SIGNAL, FULL = (os.environ.get(name, "") for name in ("FAULT_STAGE", "FAULT_SIGNAL", "FAULT_FULL"))
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts it, even if the suite ignores SIGINT


def strike(stage):
    if stage == STAGE:
        os.kill(os.getpid(), getattr(signal, SIGNAL))


def wrap(owner, name, before=None, after=None):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before:
            before(*args)
        result = real(*args, **kwargs)
        if after:
            after(*args)
        return result

    setattr(owner, name, wrapper)


def checkpointed(src, dst):
    name = os.path.basename(dst)
    if name == "train.ckpt":
        strike("baseline")
    elif name.startswith("finetune-") and name.endswith(".ckpt"):
        strike("finetune")


recalibrations = []


def recalibrating(*args):
    recalibrations.append(args)
    if len(recalibrations) == 2:
        strike("trial")


wrap(os, "replace", after=checkpointed)
wrap(evaluator, "recalibrate_batchnorm", before=recalibrating)
wrap(plots, "best_so_far_chart", before=lambda *args: strike("report"))


class FullDisk:
    """A file on a full disk: its writes fail as the kernel's do."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


real_open = builtins.open


def full_open(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    return FullDisk(handle) if FULL and "w" in mode and fnmatch.fnmatch(str(file), FULL) else handle


def full_study(study, trial):
    if FULL == "study" and len(study.trials) == 1:  # the chain Optuna raises when SQLite finds the disk full
        try:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError as full:
                raise sqlalchemy.exc.OperationalError("INSERT INTO trials", {}, full) from full
        except sqlalchemy.exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err


builtins.open = full_open
wrap(optuna.study.Study, "add_trial", before=full_study)
autocomp.app.cli.main()
'''

STAGES = ("baseline", "trial", "finetune", "report")
RESUMED = {  # what the run after a kill at each stage says as it resumes
    "baseline": "baseline: resuming at step",
    "trial": "search: resuming with 1 finished trials",
    "finetune": "fine-tune: resuming at step",
    "report": "baseline: cached at",
}
WRITTEN = {  # what the one line of each full disk names
    "baseline checkpoint": r"\S+/baselines/resnet20-digits-\w+/train\.ckpt",
    "study": r"the study \S+/run/study\.db",
    "fine-tune checkpoint": r"\S+/run/finetune-\w+\.ckpt",
    "model": r"\S+/run/model\.pt",
}


@dataclass(frozen=True)
class Step:
    """One run of a series: its fault, exit code, stderr and the run folder's files after it."""

    fault: str
    returncode: int
    stderr: str
    files: list[str]


@dataclass(frozen=True)
class Series:
    """The runs of one run folder and baseline cache, and the report the last one wrote."""

    steps: list[Step]
    report: dict[str, Any]
    folder: Path
    cache: Path


def timeless(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` without what the clock decides: wall time, images per second, seconds per evaluation, latencies."""
    report = json.loads(json.dumps(report))
    del report["wall_seconds"], report["evaluator"]["seconds_per_evaluation"]
    report["runtime"] = {key: value for key, value in report["runtime"].items() if not key.endswith("_per_second")}
    for model in ("baseline", "best"):
        del report[model]["latency_ms"]
    return report


def files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


class Runner:
    """Runs `faulty.py search` again and again on one run folder and one baseline cache, recording each run."""

    def __init__(self, base: Path, name: str, folder: Path | None = None):
        self.base, self.cache = base, base / name / "cache"
        self.folder = folder or base / name / "run"
        self.steps: list[Step] = []

    def __call__(self, fault: str, *options: str, **env: str) -> None:
        command = [
            sys.executable,
            str(self.base / "faulty.py"),
            *options,
            "search",
            "--config",
            str(self.base / "run.yaml"),
            "--out",
            str(self.folder),
        ]
        result = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "AUTOCOMP_CACHE": str(self.cache), "COLUMNS": "200", **env},
        )
        self.steps.append(Step(fault, result.returncode, result.stderr, files(self.folder)))

    def series(self, folder: Path | None = None) -> Series:
        """The series so far, its run folder copied to ``folder`` first when given."""
        if folder is not None:
            shutil.copytree(self.folder, folder)
        folder = folder or self.folder
        return Series(self.steps, json.loads((folder / "report.json").read_text()), folder, self.cache)


def uninterrupted(base: Path) -> Series:
    run = Runner(base, "uninterrupted")
    run("none")
    return run.series()


def killed(base: Path, signal_name: str) -> Series:
    """A search killed by ``signal_name`` at each stage in turn, each time run again."""
    run = Runner(base, signal_name)
    for stage in STAGES:
        run(stage, FAULT_STAGE=stage, FAULT_SIGNAL=signal_name)
    run("none")
    return run.series()


def mounted(disk: Path) -> bool:
    """Whether a 512 KiB tmpfs is mounted at ``disk`` now (root on Linux can): the study fits, a checkpoint does not."""
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=False, capture_output=True
        ).returncode
        == 0
    )


def full_disk(base: Path) -> Series:
    """A search stopped by a full disk at each kind of write in turn, each time run again with space: the baseline's
    checkpoint, a trial in the study, the fine-tune's checkpoint (a real full tmpfs where one can be mounted), model.pt
    (the finalists' files and the report's go through the same `files.replacing`). Quiet runs: stderr holds the errors
    only."""
    disk = base / "disk"
    real = mounted(disk)
    run = Runner(base, "full", disk / "run")
    try:
        run("baseline checkpoint", "-q", FAULT_FULL="*/train.ckpt*")
        run("study", "-q", FAULT_FULL="study")
        run("fine-tune checkpoint", "-q", **({} if real else {"FAULT_FULL": "*/finetune-*.ckpt*"}))
        if real:
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        run("model", "-q", FAULT_FULL=f"{run.folder}/model.pt*")
        run("none", "-q")
        return run.series(base / "full" / "run")
    finally:
        if real:
            subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Series]]]:
    """The four series, run two at a time (a thread each, a core each: `threads: 1`), the longest first."""
    base = tmp_path_factory.mktemp("faults")
    (base / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    (base / "faulty.py").write_text(FAULTY)
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "full": pool.submit(full_disk, base),
            "SIGINT": pool.submit(killed, base, "SIGINT"),
            "SIGKILL": pool.submit(killed, base, "SIGKILL"),
            "none": pool.submit(uninterrupted, base),
        }


def check_same_finish(faulted: Series, reference: Series) -> None:
    """The faulted series ends as the uninterrupted run: the same report and files, no checkpoint or partial file
    left."""
    assert faulted.steps[-1].returncode == 0, faulted.steps[-1].stderr
    assert timeless(faulted.report) == timeless(reference.report)
    assert files(faulted.folder) == files(reference.folder)  # report.md and every figure; no finalists/, no .tmp
    cached = sorted(path.name for path in faulted.cache.rglob("*") if path.is_file())
    assert cached == [".lock", "meta.json", "model.pt"]  # the baseline, without its checkpoint


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_a_search_killed_at_each_stage_resumes_to_the_uninterrupted_report(series, signal_name):
    killed_series, reference = series[signal_name].result(), series["none"].result()
    for step, after in zip(killed_series.steps, killed_series.steps[1:]):
        if signal_name == "SIGINT":
            assert step.returncode == 130, (step.fault, step.stderr)
            assert step.stderr.endswith("\ninterrupted: run the same command again to resume where it stopped.\n")
        else:
            assert step.returncode == -signal.SIGKILL, (step.fault, step.stderr)
        assert "Traceback" not in step.stderr, step.fault
        assert RESUMED[step.fault] in after.stderr, (step.fault, after.stderr)  # resumed, not started over
    report_step = killed_series.steps[STAGES.index("report")]
    assert "model.pt" in report_step.files and "report.json" not in report_step.files  # a report cut short: unfinished
    assert "fine-tune" not in killed_series.steps[-1].stderr  # the finish resumed with the finalist's fine-tuned model
    check_same_finish(killed_series, reference)


def test_a_full_disk_at_each_kind_of_write_says_so_in_one_line_and_the_run_resumes(series):
    full, reference = series["full"].result(), series["none"].result()
    for step in full.steps[:-1]:
        assert step.returncode == 2, (step.fault, step.stderr)
        assert re.fullmatch(
            rf"error: cannot write {WRITTEN[step.fault]}: the disk is full \([^)]+\); free some space "
            r"and run the same command again\.\n",
            step.stderr,
        ), (step.fault, step.stderr)
        assert not [name for name in step.files if name.endswith(".tmp")], step.fault  # no partial file takes the space
    check_same_finish(full, reference)
