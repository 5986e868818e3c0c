"""Runs at scale: the per-trial overhead of the Ray and PostgreSQL runners against the local one, and 2 workers vs 1.

Overhead: the same ``--trials`` short candidates (ResNet-20 on scikit-learn's digits, scored by
BatchNorm recalibration) are evaluated by the local runner, by a worker sharing a study on a
real PostgreSQL server (started here on 127.0.0.1) and by Ray Tune with one trial at a time.
Each runner's time beyond the evaluations themselves (the sum of the trials' own ``seconds``),
per trial, is its overhead; Ray's start is timed apart.

Speed-up: heavier candidates (proxy fine-tune steps) evaluated by 1 and then 2 `autocomp worker`
processes sharing a PostgreSQL study, and by Ray Tune with 1 and then 2 trials at once; every
process on one thread, so 2 workers can use this machine's 2 cores.

    python benchmarks/scale.py                 # 50 trials each, recorded in RESULTS.md
    python benchmarks/scale.py --trials 10 --no-record
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
import torch
import yaml
from results import append_section, markdown_table, print_table

from autocomp.app.baseline import prepare_baseline
from autocomp.app.config import RunConfig, build_config
from autocomp.app.runners.context import build_evaluator, prepare
from autocomp.app.runners.local import run_local
from autocomp.app.runners.ray_runner import QUIET, run_ray
from autocomp.app.runners.storage import shared_storage
from autocomp.app.runners.study import (
    STUDY_NAME,
    default_storage,
    finished_trials,
    open_study,
)
from autocomp.app.runners.workers import Worker, plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import missing, postgres_server

SHORT = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 2, "batch_size": 64},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "random"},
    "evaluator": {"fidelity": "bn", "bn_batches": 2, "batch_size": 128, "val_examples": 300},
    "finetune": {"epochs": 1, "batch_size": 64},
    "threads": 1,
}
"""Short candidates: the runner's own costs weigh as much as they ever will."""
HEAVY = {
    **SHORT,
    "evaluator": {
        "fidelity": "proxy",
        "steps": 15,
        "proxy": {"batch_size": 64},
        "bn_batches": 2,
        "batch_size": 128,
        "val_examples": 300,
    },
}
"""Candidates that take a while to train, for the speed-up of more workers."""


@dataclass(frozen=True)
class Measured:
    runner: str
    trials: int
    wall: float
    evaluating: float
    """The trials' own evaluation seconds, summed."""

    @property
    def overhead_ms(self) -> float:
        return 1000 * (self.wall - self.evaluating) / self.trials


def in_process(runner: str, config: RunConfig, storage: str | None, folder: Path) -> Measured:
    """``config``'s search loop alone (baseline trained and evaluator built beforehand), timed."""
    setup = prepare(config)
    baseline = prepare_baseline(config, setup.data)
    evaluator = build_evaluator(config, setup, baseline.model)
    folder.mkdir(parents=True)
    study = open_study(default_storage(folder) if storage is None else shared_storage(storage, 10, 0))
    loops: dict[str, Callable[[], None]] = {
        "local": lambda: run_local(config, setup, evaluator, study),
        "postgres": lambda: (plan(study, config), Worker(config, setup, evaluator, study).run()),
        "ray": lambda: run_ray(config, setup, baseline, evaluator, study, folder),
    }
    started = time.perf_counter()
    loops[runner]()
    return _measured(runner, study, time.perf_counter() - started)


def worker_processes(count: int, config: dict, storage: str, folder: Path) -> Measured:
    """``count`` `autocomp worker` processes sharing the study at ``storage``, timed from their start to the last end."""
    path = folder / f"workers-{count}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "autocomp.app.cli", "worker", "--config", str(path), "--storage", storage]
    logs = [folder / f"workers-{count}-{i}.log" for i in range(count)]
    started = time.perf_counter()
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w")) for log in logs]
    codes = [worker.wait() for worker in workers]
    wall = time.perf_counter() - started
    for code, log in zip(codes, logs):
        if code != 0:
            raise RuntimeError(f"a worker failed: {log.read_text()[-2000:]}")
    return _measured(
        f"{count} worker process{'es' if count > 1 else ''} (PostgreSQL)",
        optuna.load_study(study_name=STUDY_NAME, storage=storage),
        wall,
    )


def _measured(runner: str, study: optuna.Study, wall: float) -> Measured:
    trials = finished_trials(study)
    return Measured(runner, len(trials), wall, sum(t.user_attrs.get("seconds", 0.0) for t in trials))


def fresh(storage: str) -> str:
    """``storage`` without the study of an earlier measurement."""
    for name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
    return storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    reason = missing()
    if reason is not None:
        sys.exit(f"scale.py needs a PostgreSQL server: {reason}")
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(logging.WARNING)
    for name, value in QUIET.items():
        os.environ.setdefault(name, value)
    short = build_config({**SHORT, "search": {**SHORT["search"], "trials": args.trials}})
    heavy = {**HEAVY, "search": {**HEAVY["search"], "trials": args.trials}}
    overhead: list[Measured] = []
    speedup: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="autocomp-scale-") as tmp, postgres_server() as url:
        folder = Path(tmp)
        prepare_baseline(short, short.data.load())  # trained (or found) before any timing
        overhead.append(in_process("local", short, None, folder / "local"))
        overhead.append(in_process("postgres", short, fresh(url), folder / "postgres"))
        started = time.perf_counter()
        ray.init(
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.ERROR,
            num_cpus=2,
        )
        ray_start = time.perf_counter() - started
        overhead.append(
            in_process(
                "ray",
                build_config(
                    {
                        **SHORT,
                        "search": {"agent": "random", "trials": args.trials},
                        "runner": {"kind": "ray", "concurrent": 1},
                    }
                ),
                None,
                folder / "ray",
            )
        )
        for concurrent in (1, 2):
            config = build_config({**heavy, "runner": {"kind": "ray", "concurrent": concurrent}})
            measured = in_process("ray", config, None, folder / f"ray-{concurrent}")
            speedup.append(
                Measured(
                    f"Ray Tune, {concurrent} trial{'s' if concurrent > 1 else ''} at once",
                    measured.trials,
                    measured.wall,
                    measured.evaluating,
                )
            )
        ray.shutdown()
        for count in (1, 2):
            speedup.append(worker_processes(count, heavy, fresh(url), folder))

    local = overhead[0]
    rows = [
        [
            m.runner,
            m.trials,
            f"{m.wall:.1f}",
            f"{m.evaluating:.1f}",
            f"{m.overhead_ms:.0f}",
            f"{m.overhead_ms - local.overhead_ms:+.0f}",
        ]
        for m in overhead
    ]
    header = ["runner", "trials", "wall s", "evaluating s", "overhead ms/trial", "vs local ms/trial"]
    print_table(header, rows)
    print(f"Ray start (ray.init, 2 CPUs): {ray_start:.1f} s, not in the Ray row")
    speed_rows = []
    for first, second in (speedup[0:2], speedup[2:4]):
        for m in (first, second):
            speed_rows.append(
                [m.runner, m.trials, f"{m.wall:.1f}", f"{m.trials / m.wall:.2f}", f"{first.wall / m.wall:.2f}x"]
            )
    speed_header = ["runner", "trials", "wall s", "trials/s", "speed-up"]
    print_table(speed_header, speed_rows)
    if not args.no_record:
        command = "python benchmarks/scale.py " + shlex.join(sys.argv[1:])
        append_section(
            "Runs at scale: runner overhead and 2 workers vs 1",
            command.strip(),
            [
                f"Per-trial overhead, {args.trials} short candidates (ResNet-20 on digits, BatchNorm-recalibration scores, "
                "1 thread): wall time minus the trials' own evaluation seconds, per trial. PostgreSQL: a server started "
                "on 127.0.0.1, one worker in this process. Ray: one trial at a time on a local Ray instance "
                f"(its start, {ray_start:.1f} s, is not included).",
                "",
                *markdown_table(header, rows),
                "",
                f"2 workers vs 1, {args.trials} candidates of {HEAVY['evaluator']['steps']} proxy fine-tune steps each, "
                "every process on 1 thread (this machine has 2 cores). Worker processes' wall time includes their start "
                "(imports, data, baseline from the cache).",
                "",
                *markdown_table(speed_header, speed_rows),
            ],
        )


if __name__ == "__main__":
    main()
