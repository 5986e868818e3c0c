"""Runs that survive: workers sharing a study (a real PostgreSQL server, SQLite), a killed worker's trial retried,
and a SIGKILLed local search resumed, with exactly the budgeted trials and none twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from autocomp.config import build_config
from autocomp.errors import ConfigError
from autocomp.runners.context import prepare
from autocomp.runners.workers import work
from postgres_server import free_port, missing, postgres_server

CONFIG = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 1, "batch_size": 64},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "tpe", "trials": 9},
    "evaluator": {"fidelity": "proxy", "steps": 4, "proxy": {"batch_size": 32}, "bn_batches": 2, "batch_size": 128,
                  "val_examples": 100},
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
    return [sys.executable, "-m", "autocomp.cli", *args]


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="autocomp", storage=storage)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


def test_three_workers_on_postgresql_share_one_study_with_exactly_its_trials(postgres, tmp_path):
    config = write_config(tmp_path)
    workers = [subprocess.Popen(cli("worker", "--config", str(config), "--storage", postgres), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
    study = load(postgres)
    trials = study.get_trials()
    assert len(trials) == 9
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["feasible"] for t in trials)
    evaluated = [int(stdout.split("worker done: ")[1].split()[0]) for stdout, _ in outputs]
    assert sum(evaluated) == 9
    assert len({t.user_attrs["worker"] for t in trials}) == sum(n > 0 for n in evaluated) >= 2
    assert len({frozenset(t.params.items()) for t in trials}) == 9  # workers propose their own candidates

    finish = subprocess.run(cli("search", "--config", str(config), "--storage", postgres, "--out", str(tmp_path / "run")),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    report = yaml.safe_load((tmp_path / "run" / "report.json").read_text())
    assert report["trials"] == 9 and report["best"]["trial"] in range(9)
    assert len(load(postgres).get_trials()) == 9  # the finish evaluated nothing more


def test_a_worker_with_another_config_or_a_sequential_agent_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = write_config(tmp_path, search={"trials": 1})
    assert subprocess.run(cli("worker", "--config", str(first), "--storage", storage), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300).returncode == 0
    other = write_config(tmp_path, search={"trials": 1, "seed": 5})
    result = subprocess.run(cli("worker", "--config", str(other), "--storage", storage), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "another config (first difference: search.seed)" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="agent 'sensitivity' needs each result before its next proposal"):
        work(build_config({**CONFIG, "search": {"agent": "sensitivity"}, "runner": {"storage": storage}}))


def test_a_killed_workers_trial_is_failed_and_retried_by_another(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = write_config(tmp_path, search={"trials": 4}, evaluator={"steps": 100}, runner={"heartbeat": 1})
    decisions = len(prepare(build_config(yaml.safe_load(config.read_text()))).space.decisions)
    victim = subprocess.Popen(cli("worker", "--config", str(config), "--storage", storage), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    result = subprocess.run(cli("worker", "--config", str(config), "--storage", storage), cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
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
    config = build_config({**CONFIG, "search": {"agent": "tpe", "trials": 2}, "evaluator": {"fidelity": "bn"},
                           "runner": {"storage": storage}})
    space = prepare(config).space
    study = optuna.create_study(study_name="autocomp", storage=storage, direction="maximize")
    name, distribution = next(iter(space.distributions().items()))
    study.add_trial(optuna.trial.create_trial(  # a retry copying the one param written before the kill, as Optuna's does
        state=TrialState.WAITING, params={name: distribution.low}, distributions={name: distribution}))
    study.set_user_attr("planned", 1)
    assert work(build_config({**config.to_dict(), "search": {"agent": "tpe", "trials": 1}})) == 1
    (trial,) = load(storage).get_trials()
    assert trial.state == TrialState.COMPLETE and set(trial.params) == set(space.distributions())


def test_a_sigkilled_local_search_resumes_to_exactly_its_budget(tmp_path):
    budget = 30
    config = write_config(tmp_path, search={"agent": "random", "trials": budget}, evaluator={"fidelity": "bn"})
    out = tmp_path / "out"
    command = cli("search", "--config", str(config), "--out", str(out))
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{out / 'study.db'}"

    def finished() -> list[optuna.trial.FrozenTrial]:
        if not (out / "study.db").exists():
            return []
        try:
            return load(storage).get_trials(states=(TrialState.COMPLETE,))
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError):
            return []  # the search is still creating the study (this read may race it to the tables)

    deadline = time.monotonic() + 300
    while len(finished()) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {t.number: t.params for t in finished()}
    assert 3 <= len(before) < budget

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = load(storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(budget))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.number: t.params for t in trials if t.number in before} == before  # kept, not redone
    assert len({frozenset(t.params.items()) for t in trials}) == budget  # random: no candidate drawn twice


def test_the_dashboard_serves_a_runs_study_on_loopback(tmp_path):
    import json
    import urllib.request

    run = tmp_path / "run"
    run.mkdir()
    study = optuna.create_study(study_name="autocomp", storage=f"sqlite:///{run / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    port = free_port()
    server = subprocess.Popen(cli("dashboard", str(run), "--port", str(port)), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    missing = subprocess.run(cli("dashboard", str(tmp_path / "nothing")), cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "holds no study" in missing.stderr
