"""Runs that survive: workers sharing a study (a real PostgreSQL server, SQLite), a killed worker's trial retried,
and a server restarted under them, with exactly the budgeted trials and none twice (a killed local search:
test_faults)."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial, TrialState
from postgres_server import free_port, missing, running_postgres
from typer.testing import CliRunner

import autocomp.app.runners.storage
from autocomp.app.cli import app
from autocomp.app.config import build_config
from autocomp.app.runners.context import prepare
from autocomp.app.runners.shared import retry_running, take_waiting
from autocomp.app.runners.storage import shared_storage
from autocomp.app.runners.study import open_study
from autocomp.app.runners.workers import _record, work
from autocomp.errors import ConfigError

CONFIG = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 1, "batch_size": 64},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "tpe", "trials": 9, "reference": False},
    "evaluator": {
        "fidelity": "proxy",
        "steps": 4,
        "proxy": {"batch_size": 32},
        "bn_batches": 2,
        "batch_size": 128,
        "val_examples": 100,
    },
    "finetune": {"epochs": 1, "batch_size": 64},
    "threads": 1,
}


def write_config(folder: Path, **changes: dict) -> Path:
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in CONFIG.items()}
    for section, values in changes.items():
        config[section] = {**config.get(section, {}), **values}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autocomp.app.cli", *args]


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="autocomp", storage=storage)


def test_a_postgresql_restart_under_three_workers_and_the_search_loses_no_trial_and_duplicates_none(tmp_path):
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    config = write_config(tmp_path)
    with running_postgres() as server:
        search = cli("search", "--config", str(config), "--storage", server.url, "--out", str(tmp_path / "run"))
        worker = cli("worker", "--config", str(config), "--storage", server.url)
        commands = (search, worker, worker, worker)
        logs = [tmp_path / f"process{i}.log" for i in range(len(commands))]
        with trials_held(server.url):  # no trial is planned until every process has joined (past its start)
            processes = [
                subprocess.Popen(command, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
                for command, log in zip(commands, logs)
            ]
            joined(logs, processes)
            assert load(server.url).get_trials() == []  # held: joined, none planned yet
        in_flight = being_evaluated(server.url)
        server.restart(down_seconds=5)
        for process, log in zip(processes, logs):
            process.wait(timeout=300)
            assert process.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()
        outputs = [" ".join(log.read_text().split()) for log in logs]
        assert any("does not answer" in output for output in outputs)  # the outage reached them, and they waited it out
        trials = load(server.url).get_trials()
    assert sorted(t.number for t in trials) == list(range(9))  # none lost, no retry copy
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["feasible"] for t in trials)
    assert len({frozenset(t.params.items()) for t in trials}) == 9  # no candidate evaluated twice
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # shared: more than one process evaluated
    assert all(trials[t.number].params == t.params for t in in_flight)  # in flight at the restart: finished once
    evaluated = [int(re.search(r"trials are done, (\d+) of them here", output).group(1)) for output in outputs]
    assert sum(evaluated) == 9  # each trial evaluated by one process, once
    report = yaml.safe_load((tmp_path / "run" / "report.json").read_text())
    assert report["trials"] == 9 and report["failed_trials"] == 0


@contextmanager
def trials_held(url: str) -> Iterator[None]:
    """Create the study tables, and keep every process from writing a trial (planning included) until the block ends:
    a lock on the trials table, held by a connection of the test's own."""
    optuna.storages.RDBStorage(url).engine.dispose()
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("LOCK TABLE trials IN EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def joined(logs: list[Path], processes: list[subprocess.Popen], timeout: float = 300) -> None:
    """Wait until each process has logged that it opened the shared study (every storage call patient from then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = [" ".join(log.read_text().split()) for log in logs]
        if all("the shared study at" in output for output in outputs):
            return
        for process, output in zip(processes, outputs):
            assert process.poll() is None, output  # a process that ended before joining: its output says why
        time.sleep(0.2)
    raise AssertionError(f"not every one of {len(logs)} processes joined the shared study within {timeout:.0f} s")


def being_evaluated(url: str, timeout: float = 300) -> list[FrozenTrial]:
    """The shared study's running trials whose candidate is written, once a trial is finished."""
    deadline, storage = time.monotonic() + timeout, optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        while time.monotonic() < deadline:
            time.sleep(0.1)
            trials = optuna.load_study(study_name="autocomp", storage=storage).get_trials()
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [
                t for t in trials if t.state == TrialState.RUNNING and done and t.params.keys() == done[0].params.keys()
            ]
            if running:
                return running
            assert not trials or len(done) < len(trials), "every trial finished before one was seen running"
    finally:
        storage.engine.dispose()
    raise AssertionError(f"no trial was seen running with its candidate written within {timeout:.0f} s")


def test_a_storage_away_longer_than_the_patience_is_refused_in_one_line(monkeypatch):
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as server:
        study = open_study(shared_storage(server.url, heartbeat=10, max_failures=2))
        server.pg_ctl("-m", "fast", "-w", "stop")
        monkeypatch.setattr(autocomp.app.runners.storage, "STORAGE_PATIENCE_SECONDS", 1.0)
        with pytest.raises(
            ConfigError,
            match=r"^the study storage 'postgresql://autocomp@127\.0\.0\.1:\d+/postgres' "
            r"did not answer for 1 s: [^\n]*Connection refused$",
        ):
            study.get_trials()


REFUSED = {  # a storage the worker cannot use -> the start of its one line
    "postgresql+pg8000://autocomp:secret@127.0.0.1/db": "storage 'postgresql+pg8000://autocomp:***@127.0.0.1/db' needs "
    "the Python module 'pg8000' (SQLAlchemy's postgresql+pg8000 driver), which is not installed; for PostgreSQL, pip "
    "install 'autocomp[postgres]' and give a postgresql://user@host/db URL.",
    "mysql://autocomp:secret@127.0.0.1/db": "storage 'mysql://autocomp:***@127.0.0.1/db' needs the Python module "
    "'MySQLdb' (SQLAlchemy's mysql+mysqldb driver), which is not installed",
    "postgresql://autocomp:secret@127.0.0.1:{port}/db": "cannot reach the study storage "
    "'postgresql://autocomp:***@127.0.0.1:{port}/db': connection failed:",
}


@pytest.mark.parametrize("storage", REFUSED)
def test_a_worker_without_the_storages_driver_or_server_is_refused_in_one_line_before_anything(
    storage, tmp_path, monkeypatch
):
    driver = re.search(r"needs the Python module '(\w+)'", REFUSED[storage])
    if driver is not None and importlib.util.find_spec(driver.group(1)) is not None:
        pytest.skip(f"{driver.group(1)} is installed here")
    port = str(free_port())  # nothing listens there
    monkeypatch.setenv("AUTOCOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    result = CliRunner().invoke(
        app, ["--quiet", "worker", "--config", str(config), "--storage", storage.format(port=port)], terminal_width=400
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: " + REFUSED[storage].format(port=port)), result.output
    assert "secret" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no baseline trained, nothing written


def test_a_result_whose_trial_was_failed_meanwhile_finishes_its_waiting_retry_or_is_dropped(tmp_path):
    study = open_study(shared_storage(f"sqlite:///{tmp_path / 'shared.db'}", heartbeat=10, max_failures=2))
    storage, distribution = study._storage, optuna.distributions.FloatDistribution(0, 1)
    record = optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": distribution}, value=0.9, user_attrs={"accuracy": 0.9}
    )
    for _ in range(2):
        study.enqueue_trial({}, skip_if_exists=False)
    first = take_waiting(study)
    storage.set_trial_param(first._trial_id, "x", 0.5, distribution)
    retry_running(study)  # failed while its worker was cut off from the storage, as a stale-trial check does
    written = _record(study, first, record)
    assert written is not None and written.number == 2  # the retry, finished with the result: not evaluated again
    assert [(t.state, t.value) for t in study.get_trials()] == [
        (TrialState.FAIL, None),
        (TrialState.WAITING, None),
        (TrialState.COMPLETE, 0.9),
    ]

    second = take_waiting(study)
    retry_running(study)
    taken_by_another = take_waiting(study)
    assert _record(study, second, record) is None  # its retry is another worker's now: dropped, nothing written
    assert storage.get_trial(taken_by_another._trial_id).state == TrialState.RUNNING
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 1


def test_a_worker_with_another_config_or_a_sequential_agent_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = write_config(tmp_path, search={"trials": 1})
    assert (
        subprocess.run(
            cli("worker", "--config", str(first), "--storage", storage),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        ).returncode
        == 0
    )
    other = write_config(tmp_path, search={"trials": 1, "seed": 5})
    result = subprocess.run(
        cli("worker", "--config", str(other), "--storage", storage),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "another config (first difference: search.seed)" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="agent 'sensitivity' needs each result before its next proposal"):
        work(
            build_config(
                {**CONFIG, "search": {"agent": "sensitivity", "reference": False}, "runner": {"storage": storage}}
            )
        )


def test_a_killed_workers_trial_is_failed_and_retried_by_another(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = write_config(tmp_path, search={"trials": 4}, evaluator={"steps": 100}, runner={"heartbeat": 1})
    decisions = len(prepare(build_config(yaml.safe_load(config.read_text()))).space.decisions)
    victim = subprocess.Popen(
        cli("worker", "--config", str(config), "--storage", storage),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if any(len(t.params) == decisions for t in load(storage).get_trials(states=(TrialState.RUNNING,))):
                break  # taken, its candidate written: being evaluated
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError):
            pass  # the worker is still creating the study
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = load(storage).get_trials(states=(TrialState.RUNNING,))
    assert len(killed) == 1

    result = subprocess.run(
        cli("worker", "--config", str(config), "--storage", storage),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    trials = load(storage).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed[0].number]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == killed[0].params  # the same candidate again
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4


def test_a_trial_whose_worker_died_while_writing_its_candidate_gets_a_whole_new_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = build_config(
        {
            **CONFIG,
            "search": {"agent": "tpe", "trials": 2, "reference": False},
            "evaluator": {"fidelity": "bn"},
            "runner": {"storage": storage},
        }
    )
    space = prepare(config).space
    study = optuna.create_study(study_name="autocomp", storage=storage, direction="maximize")
    name, distribution = next(iter(space.distributions().items()))
    study.add_trial(
        optuna.trial.create_trial(  # a retry copying the one param written before the kill, as Optuna's does
            state=TrialState.WAITING, params={name: distribution.low}, distributions={name: distribution}
        )
    )
    study.set_user_attr("planned", 1)
    assert work(build_config({**config.to_dict(), "search": {"agent": "tpe", "trials": 1}})) == 1
    (trial,) = load(storage).get_trials()
    assert trial.state == TrialState.COMPLETE and set(trial.params) == set(space.distributions())


def test_the_dashboard_serves_a_runs_study_on_loopback(tmp_path):
    import json
    import urllib.request

    run = tmp_path / "run"
    run.mkdir()
    study = optuna.create_study(study_name="autocomp", storage=f"sqlite:///{run / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    port = free_port()
    server = subprocess.Popen(
        cli("dashboard", str(run), "--port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "the dashboard never answered"
        assert [s["study_name"] for s in studies] == ["autocomp"]
    finally:
        server.terminate()
        server.wait(timeout=30)
