"""The Ray Tune runner on a real two-node Ray cluster (loopback): placement, retries, ASHA, resume, any agent, a
worker's programming error."""

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

import agents
import autocomp
from autocomp.app.baseline import prepare_baseline
from autocomp.app.config import build_config
from autocomp.app.config.tune import load_tune_config
from autocomp.app.runners import ray_runner
from autocomp.app.runners.context import build_evaluator, prepare
from autocomp.app.runners.ray_searcher import (
    AgentSearcher,
    StopOnBug,
    WorkerTraceback,
    decode_result,
    encode_bug,
    encode_result,
)
from autocomp.app.runners.reachable import check_address
from autocomp.app.runners.study import finished_trial, open_study, result_of
from autocomp.app.tuning import tune
from autocomp.errors import ConfigError, SearchError
from autocomp.evaluate import EvalResult
from autocomp.evaluate.timing import Timing
from tests.test_agents import tiny_setting

TINY = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 4, "batch_size": 64, "lr": 0.1},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "tpe", "trials": 6, "reference": False},
    "evaluator": {
        "fidelity": "proxy",
        "steps": 10,
        "proxy": {"batch_size": 64},
        "bn_batches": 4,
        "batch_size": 128,
        "val_examples": 300,
    },
    "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "runner": {"kind": "ray"},
}
COMPLETE, PRUNED, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL


class RepeatAgent(agents.Agent):
    """Proposes the same policy every time."""

    def propose(self) -> autocomp.Policy:
        return self.space.fill(0.7)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node of one CPU each on 127.0.0.1, joined by this process as the driver."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # as conftest's, for this module
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback addresses stay loopback (nodes' processes)
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)  # ... and in this process
        nodes = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"},
        )
        try:
            nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            ray.init(address=nodes.address, _node_ip_address="127.0.0.1", log_to_driver=False)
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()


def _config(agent: str, trials: int, **sections) -> autocomp.app.config.RunConfig:
    return build_config({**TINY, "search": {"agent": agent, "trials": trials, "reference": False}, **sections})


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="autocomp", storage=f"sqlite:///{run / 'study.db'}")


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory):
    run = tmp_path_factory.mktemp("ray") / "two-nodes"
    return run, autocomp.search(_config("random", 6), run)


@pytest.mark.slow
def test_a_search_on_two_nodes_records_every_trial_as_the_local_runner_does(two_node_run):
    run, result = two_node_run
    trials = _study(run).trials
    assert [t.number for t in trials] == list(range(6)) and result.report.trials == 6
    assert all(t.state == COMPLETE for t in trials)
    for trial in trials:
        attrs = trial.user_attrs
        autocomp.Policy.from_dict(attrs["policy"])
        assert attrs["feasible"] is True and attrs["probe"] is False and attrs["cached"] is False
        assert attrs["seconds"] > 0 and attrs["macs"] > 0 and 0 <= trial.value == attrs["accuracy"] <= 1
        assert trial.intermediate_values == {}  # no scheduler: no intermediate scores, as locally without a pruner
    assert len({t.user_attrs["score_key"] for t in trials}) == 6
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert {t.user_attrs["ray_node"] for t in trials} == nodes and len(nodes) == 2
    assert max(t.user_attrs["ray_beside"] for t in trials) == 1  # two candidates at once, one per node's CPU
    assert (run / "report.json").is_file() and (run / "model.pt").is_file()
    assert (run / "ray" / "search-1").is_dir()  # Tune's experiment lives in the run folder


@pytest.mark.slow
def test_a_longer_budget_resumes_the_study_without_repeating_a_trial(two_node_run, tmp_path):
    run, _ = two_node_run
    for name in ("study.db", "config.yaml"):
        (tmp_path / name).write_bytes((run / name).read_bytes())
    autocomp.search(_config("random", 8), tmp_path)
    before, after = _study(run).trials, _study(tmp_path).trials
    assert [t.number for t in after] == list(range(8))
    assert [t.params for t in after[:6]] == [t.params for t in before]
    assert len({tuple(sorted(t.params.items())) for t in after}) == 8  # the replayed agent went on, never back
    assert len({t.user_attrs["ray_trial"] for t in after}) == 8


def _children(root: int) -> list[int]:
    """Every process below ``root`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, frontier = [], [root]
    while frontier:
        below = [pid for pid, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _kill_first_trial_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker of this test's cluster seen running a trial."""
    while not stop.is_set():
        for pid in _children(os.getpid()):
            if _title(pid).startswith("ray::ImplicitFunc.train"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_tuning_whose_searches_run_on_the_ray_cluster(cluster, tmp_path):
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({**TINY, "search": {"agent": "random", "trials": 2, "reference": False}})
    )
    (tmp_path / "tune.yaml").write_text(
        yaml.safe_dump(
            {"config": "run.yaml", "trials": 2, "params": {"finetune.lr": {"low": 0.01, "high": 0.1, "log": True}}}
        )
    )
    summary = tune(load_tune_config(tmp_path / "tune.yaml"), tmp_path / "out").summary
    assert summary["complete"] == 2
    for row in summary["all"]:
        searched = _study(tmp_path / "out" / row["folder"]).trials
        assert len(searched) == 2 and all("ray_node" in t.user_attrs for t in searched)  # evaluated on Ray workers
        assert (
            row["value"]
            == json.loads((tmp_path / "out" / row["folder"] / "report.json").read_text())["best"][
                "finetuned_val_accuracy"
            ]
        )


@pytest.mark.slow
def test_a_worker_killed_during_a_trial_is_retried_and_the_study_completes(cluster, tmp_path):
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_trial_worker, args=(killed, stop), daemon=True)
    killer.start()
    try:  # uniform must see each result before it asks again: its trials run one at a time
        result = autocomp.search(_config("uniform", 1), tmp_path)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    trials = _study(tmp_path).trials
    assert len(trials) == 1 and trials[0].state == COMPLETE and result.report.best.trial == 0
    failed = [path.parent.name for path in (tmp_path / "ray" / "search-1").glob("*/error.txt")]
    assert failed == [trials[0].user_attrs["ray_trial"]]  # the killed trial ran again, and finished
    assert "died" in (tmp_path / "ray" / "search-1" / failed[0] / "error.txt").read_text()


def _faulty(error: str, trials: int, scheduler: str = "none") -> autocomp.app.config.RunConfig:
    """A search whose every candidate raises ``error`` in its forward (`tests.faulty_model`), on the Ray workers."""
    return _config(
        "random",
        trials,
        model={"factory": "tests.faulty_model:Faulty", "kwargs": {"error": error}},
        runner={"kind": "ray", "scheduler": scheduler},
    )


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["none", "asha"])
def test_a_programming_error_on_a_worker_stops_the_search_with_its_traceback_and_is_never_retried(
    cluster, tmp_path, scheduler
):
    with pytest.raises(TypeError, match=r"^the planted fault of a pruned Faulty model$") as raised:
        autocomp.search(_faulty("TypeError", 6, scheduler), tmp_path)
    cause = raised.value.__cause__
    assert isinstance(cause, WorkerTraceback) and "raised on the Ray worker of node" in str(cause)
    assert 'faulty_model.py", line' in str(cause) and "in forward" in str(cause)  # where it was raised, on the worker
    assert f'"{ray_runner.__file__}", line' in str(cause)  # the worker ran the driver's own autocomp
    experiment = tmp_path / "ray" / "search-1"
    assert not list(experiment.glob("*/error.txt"))  # no trial failed in Tune's eyes: none was retried
    assert 1 <= len([path for path in experiment.iterdir() if path.is_dir()]) <= 2  # stopped as the first ones ended
    assert _study(tmp_path).trials == []  # a bug is no candidate's result
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_an_evaluation_error_on_a_worker_is_a_failed_trial_as_before(cluster, tmp_path):
    with pytest.raises(SearchError, match="no candidate of the 2 trials could be evaluated"):
        autocomp.search(_faulty("RuntimeError", 2), tmp_path)
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [FAIL, FAIL] and all("ray_node" in t.user_attrs for t in trials)
    assert all(t.user_attrs["error"].startswith("RuntimeError while ") for t in trials)
    assert not list((tmp_path / "ray" / "search-1").glob("*/error.txt"))  # the evaluator's own failure: no retry


def test_a_programming_error_crosses_from_a_worker_as_its_own_kind_caused_by_the_workers_traceback():
    def broken() -> None:
        raise ModuleNotFoundError("no module named 'missing'")

    try:
        broken()
    except ImportError as err:
        bug = {"score": float("nan"), "bug": encode_bug(err, "n1")}
    stopper = StopOnBug()
    assert stopper("a", {"score": 0.5}) is False and stopper.stop_all() is False
    assert stopper("b", bug) is True and stopper.stop_all() is True
    error = stopper.bug
    assert type(error) is ImportError and str(error) == "no module named 'missing'"
    assert isinstance(error.__cause__, WorkerTraceback)
    assert "node n1" in str(error.__cause__) and "in broken" in str(error.__cause__)
    assert str(error.__cause__).rstrip().endswith("ModuleNotFoundError: no module named 'missing'")


@pytest.mark.slow
def test_asha_stops_trials_whose_intermediate_scores_trail(cluster, tmp_path):
    config = _config(
        "tpe",
        8,
        runner={"kind": "ray", "scheduler": "asha"},
        evaluator={**TINY["evaluator"], "steps": 20, "report_every": 5, "report_examples": 100},
    )
    result = autocomp.search(config, tmp_path)
    trials = _study(tmp_path).trials
    pruned = [t for t in trials if t.state == PRUNED]
    assert len(trials) == 8 and 0 < len(pruned) == result.report.pruned_trials < 8
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == PRUNED:
            stopped_at = trial.user_attrs["stopped_at"]
            assert stopped_at in (5, 10) and steps == list(range(5, stopped_at + 1, 5))
            assert (
                trial.user_attrs["accuracy"] == trial.intermediate_values[stopped_at] and trial.user_attrs["macs"] > 0
            )
            others = [t.intermediate_values[stopped_at] for t in trials if stopped_at in t.intermediate_values]
            assert trial.intermediate_values[stopped_at] < max(others)  # ASHA stops trailing candidates only
        else:
            assert trial.state == COMPLETE and steps == [5, 10, 15, 20]
    assert (
        len({t.user_attrs["score_key"] for t in trials}) == 8 and max(t.user_attrs["ray_beside"] for t in trials) == 1
    )


@pytest.mark.slow
def test_successive_halving_on_ray_stops_trials_at_the_rungs_only(cluster, tmp_path):
    config = _config(
        "random", 8, runner={"kind": "ray"}, evaluator={**TINY["evaluator"], "fidelity": "halving", "rungs": [0, 4, 12]}
    )
    result = autocomp.search(config, tmp_path)
    trials = _study(tmp_path).trials
    pruned = [t for t in trials if t.state == PRUNED]
    assert len(trials) == 8 and 0 < len(pruned) == result.report.pruned_trials < 8
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == PRUNED:  # stopped by Tune's ASHA at a rung, its score there trailing
            assert steps in ([0], [0, 4]) and trial.user_attrs["stopped_at"] == steps[-1]
            others = [t.intermediate_values[steps[-1]] for t in trials if steps[-1] in t.intermediate_values]
            assert trial.intermediate_values[steps[-1]] < max(others)
        else:
            assert trial.state == COMPLETE and steps == [0, 4, 12] and trial.value == trial.intermediate_values[12]


def test_the_searcher_records_failures_stops_and_repeats_and_never_runs_a_policy_twice_at_once(tmp_path):
    config = _config("random", 5)
    setup = prepare(config)
    setup = dataclasses.replace(setup, agent=RepeatAgent(setup.space, setup.budget))
    evaluator = build_evaluator(config, setup, prepare_baseline(config, setup.data).model)
    study = open_study(optuna.storages.InMemoryStorage())
    stopped = {"f"}
    searcher = AgentSearcher(setup, evaluator, study, 5, tmp_path, stopped.__contains__, lambda: None)
    policy = autocomp.Policy.from_dict(json.loads(searcher.suggest("a")["policy"]))
    assert searcher.suggest("b") is None  # the same policy is in flight: wait for its result
    searcher.on_trial_complete("a", error=True)  # Tune gave it up after its retries
    assert searcher.suggest("c") is not None  # a failure may pass another time
    searcher.on_trial_complete("c")  # ended without a result (an interrupted run): lost, not recorded
    assert searcher.suggest("f") is not None
    measured = autocomp.measure(evaluator.build(policy), setup.example)
    cost = json.dumps(measured.to_dict())
    searcher.on_trial_result("f", {"step": 5, "score": 0.5, "node": "n1", "cost": cost})
    searcher.on_trial_complete("f", {"step": 10, "score": 0.25, "node": "n1", "cost": cost, "time_total_s": 1.5})
    assert searcher.suggest("d") is not None
    evaluation = encode_result(EvalResult(0.9, measured, 2.0, loss=0.3, curve=((10, 0.875),)))
    searcher.on_trial_complete("d", {"score": 0.9, "node": "n2", "evaluation": evaluation})
    assert searcher.suggest("e") == "FINISHED" and searcher.finished  # the rest are cache hits, recorded at once
    trials = study.trials
    assert [t.state for t in trials] == [FAIL, PRUNED, COMPLETE, COMPLETE, COMPLETE]
    assert [t.user_attrs.get("ray_trial") for t in trials] == ["a", "f", "d", None, None]
    assert trials[0].user_attrs["retry"] is True and "gave trial a up" in trials[0].user_attrs["error"]
    assert trials[1].intermediate_values == {5: 0.5, 10: 0.25} and trials[1].user_attrs["stopped_at"] == 10
    assert trials[1].user_attrs["accuracy"] == 0.25 and trials[1].user_attrs["ray_node"] == "n1"
    assert [t.value for t in trials[2:]] == [0.9] * 3 and trials[2].intermediate_values == {10: 0.875}
    assert [t.user_attrs["cached"] for t in trials[2:]] == [False, True, True]
    assert len({t.user_attrs["score_key"] for t in trials}) == 1


def test_an_address_where_no_cluster_answers_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        check_address("127.0.0.1:1")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_address("nowhere")


def test_a_result_crosses_from_a_worker_and_through_the_study_whole():
    graph, space, budget = tiny_setting()
    proposal = space.smallest()
    measured = autocomp.measure(graph.model, graph.example_inputs)
    result = EvalResult(0.9, measured, 2.0, loss=0.3, curve=((10, 0.875),), timing=Timing(2.0, 1.5))
    assert decode_result(encode_result(result)) == result
    recorded = result_of(finished_trial(space, proposal, proposal, budget, "key", result, probe=False))
    assert recorded == result
