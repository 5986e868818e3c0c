"""`autocomp tune`: hyperparameter studies whose trials are small searches or fine-tunes, scored on held-out
training data only, resumable, and shared by several processes through one storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from postgres_server import missing, postgres_server
from typer.testing import CliRunner

import autocomp.app.tuning
from autocomp import io
from autocomp.app.cli import app
from autocomp.app.config import load_config
from autocomp.app.config.tune import load_tune_config
from autocomp.app.tuning import TUNE_STUDY, tune
from autocomp.data import load_dataset
from autocomp.errors import ConfigError
from autocomp.evaluate import accuracy

RUN = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 1, "batch_size": 64},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "random", "trials": 2, "reference": False},
    "evaluator": {
        "fidelity": "proxy",
        "steps": 3,
        "proxy": {"batch_size": 32},
        "bn_batches": 2,
        "batch_size": 128,
        "val_examples": 100,
    },
    "finetune": {"epochs": 1, "batch_size": 64},
    "threads": 1,
}


def write_tune(folder: Path, name: str = "tune.yaml", **tune_keys) -> Path:
    (folder / "run.yaml").write_text(yaml.safe_dump(RUN))
    path = folder / name
    path.write_text(yaml.safe_dump({"config": "run.yaml", "trials": 3, **tune_keys}))
    return path


def study_of(out: Path) -> optuna.Study:
    return optuna.load_study(study_name=TUNE_STUDY, storage=f"sqlite:///{out / 'tune.db'}")


LR = {"finetune.lr": {"low": 0.001, "high": 0.2, "log": True}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    out = folder / "out"
    result = tune(load_tune_config(write_tune(folder, params=LR)), out)
    return folder, out, result


def test_each_trial_is_a_search_scored_by_its_fine_tuned_models_held_out_accuracy(searched):
    _folder, out, result = searched
    trials = study_of(out).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({t.params["finetune.lr"] for t in trials}) == 3
    val = load_dataset("digits", val_size=300).val  # the held-out split of the training set, as the search made it
    for trial in trials:
        run = out / trial.user_attrs["folder"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["finetune"]["lr"] == pytest.approx(trial.params["finetune.lr"])
        assert config["search"]["trials"] == 2  # the run config's own settings, the tuned key alone changed
        report = json.loads((run / "report.json").read_text())
        assert trial.value == report["best"]["finetuned_val_accuracy"]
        assert trial.value == pytest.approx(accuracy(io.load(run / "model.pt"), val))  # measured again, another way
    summary = json.loads((out / "tune.json").read_text())
    assert summary == result.summary and summary["complete"] == 3
    assert summary["best"]["value"] == max(t.value for t in trials)
    assert "test" not in json.dumps(summary) and not any("test" in k for t in trials for k in t.user_attrs)


def test_a_finetune_target_fine_tunes_one_policy_and_reads_repeated_values_back(searched, tmp_path):
    _, out, _ = searched
    run = next((out / "trials").iterdir())
    path = write_tune(
        tmp_path,
        params={"finetune.lr": {"choices": [0.002, 0.05]}},
        target="finetune",
        policy=str(run),
        sampler="random",
        trials=4,
    )
    result = tune(load_tune_config(path), tmp_path / "out")
    trials = study_of(tmp_path / "out").trials
    assert result.summary["complete"] == 4
    folders = {t.params["finetune.lr"]: t.user_attrs["folder"] for t in trials}
    assert len(set(folders.values())) == len(folders) == len(list((tmp_path / "out" / "trials").iterdir()))
    for trial in trials:  # one value, one fine-tune: a repeated draw reads the first one's result
        assert (
            trial.value
            == json.loads((tmp_path / "out" / trial.user_attrs["folder"] / "result.json").read_text())["val_accuracy"]
        )
    assert len({t.value for t in trials}) == len(folders) == 2  # the learning rate changes the fine-tuned model


def test_an_interrupted_tuning_resumes_with_the_same_trials(tmp_path, monkeypatch):
    search = autocomp.app.tuning._search
    calls = []

    def interrupted(config, folder):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return search(config, folder)

    monkeypatch.setattr(autocomp.app.tuning, "_search", interrupted)
    path = write_tune(tmp_path, params=LR)
    with pytest.raises(KeyboardInterrupt):
        tune(load_tune_config(path), tmp_path / "out")
    waiting = study_of(tmp_path / "out").get_trials(states=(TrialState.WAITING,))
    assert [t.number for t in waiting] == [1, 2] and "finetune.lr" in waiting[0].params  # it waits with its value
    tune(load_tune_config(path), tmp_path / "out")
    trials = study_of(tmp_path / "out").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[1].params == waiting[0].params and calls[2] == calls[1]


def test_a_trial_left_running_by_a_dead_process_is_retried_with_its_values(tmp_path, monkeypatch):
    def dies(config, folder):
        raise SystemExit("killed")  # neither a failure nor an interruption: as if the process vanished

    monkeypatch.setattr(autocomp.app.tuning, "_search", dies)
    path = write_tune(tmp_path, params=LR, trials=2)
    with pytest.raises(SystemExit):
        tune(load_tune_config(path), tmp_path / "out")
    running = study_of(tmp_path / "out").get_trials(states=(TrialState.RUNNING,))
    monkeypatch.undo()
    tune(load_tune_config(path), tmp_path / "out")
    trials = study_of(tmp_path / "out").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert len(running) == 1 and trials[2].params == running[0].params  # the retry, at the end


@pytest.fixture(scope="module")
def postgres():
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


def test_two_processes_share_one_tuning_on_postgresql_with_exactly_its_trials(tmp_path, postgres):
    path = write_tune(tmp_path, params=LR, trials=3)
    storage = postgres
    command = [sys.executable, "-m", "autocomp.app.cli", "tune", str(path), "--storage", storage]
    processes = [
        subprocess.Popen(
            [*command, "--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for i in range(2)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trials = optuna.load_study(study_name=TUNE_STUDY, storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["finetune.lr"] for t in trials}) == 3


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"params": {"finetune.learning_rate": {"low": 0.1, "high": 1}}}, "tuned key 'finetune.learning_rate'"),
        ({"params": {"finetune.lr": {"low": 0.1, "high": 0.1}}}, "low 0.1 must be below high 0.1"),
        ({"params": {"finetune.lr": {"low": 0, "high": 1, "log": True}}}, "log needs low > 0"),
        (
            {"params": {"evaluator.steps": {"choices": [5]}}, "target": "finetune", "policy": "p.json"},
            "target finetune tunes finetune.* keys only, not 'evaluator.steps'",
        ),
        ({"params": {"finetune.alpha": {"low": 0.5, "high": 1.5}}}, "tuned key 'finetune.alpha' at 1.5"),
        (
            {"params": {"search.agent": {"choices": ["tpe", "tpee"]}}},
            "tuned key 'search.agent' at 'tpee': unknown agent 'tpee'",
        ),
        ({"params": {"search.agent": {"choices": ["tpe"], "log": True}}}, "not choices with log"),
        ({"params": LR, "set": ["runner.storage=sqlite:///shared.db"]}, "names runner.storage"),
        ({"params": {}}, "'params'"),
        ({"params": LR, "trials": 0}, "'trials' = 0"),
    ],
)
def test_bad_tune_files_are_refused_in_one_sentence_and_nothing_is_written(tmp_path, keys, message):
    path = write_tune(tmp_path, **keys)
    result = CliRunner().invoke(app, ["tune", str(path), "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_tuning_is_refused_and_kept(searched, tmp_path):
    _, out, _ = searched
    before = (out / "tune.yaml").read_text()
    path = write_tune(tmp_path, params={"finetune.lr": {"low": 0.01, "high": 0.1}})
    with pytest.raises(ConfigError, match="holds a tuning of another tune config"):
        tune(load_tune_config(path), out)
    assert (out / "tune.yaml").read_text() == before
    assert load_config(tmp_path / "run.yaml").search.trials == 2


def test_a_tuning_is_known_by_its_files_contents_not_their_paths(searched, tmp_path):
    _folder, out, _ = searched
    moved = tmp_path / "moved"
    moved.mkdir()
    path = write_tune(moved, params=LR)  # the same files elsewhere: the same tuning, resumed (nothing left to run)
    assert tune(load_tune_config(path), out).summary["complete"] == 3
    (moved / "run.yaml").write_text(yaml.safe_dump({**RUN, "finetune": {"epochs": 2, "batch_size": 64}}))
    with pytest.raises(ConfigError, match=r"first difference: run_config\.finetune\.epochs"):
        tune(load_tune_config(path), out)  # the run config's contents changed: another tuning


def test_the_example_tune_file_is_accepted():
    example = load_tune_config(Path(__file__).parent.parent / "configs" / "tune" / "fmnist_resnet20.yaml")
    autocomp.app.tuning.check_tune_config(example)
    assert example.target == "search" and "search.agent" in example.params


def test_a_second_local_tuning_of_one_folder_is_refused_while_the_first_runs(tmp_path):
    from autocomp.locking import file_lock

    path = write_tune(tmp_path, params=LR)
    with file_lock(tmp_path / "out" / ".lock"):  # as a running `autocomp tune` holds it, having claimed the folder
        (tmp_path / "out" / "tune.yaml").write_text(path.read_text())
        with pytest.raises(ConfigError, match="another autocomp tune is running in"):
            tune(load_tune_config(path), tmp_path / "out")
    assert not (tmp_path / "out" / "tune.db").exists()
