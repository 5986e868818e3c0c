"""The run config is built from the library's settings: one definition of each field, default and allowed value."""

from dataclasses import asdict, fields
from pathlib import Path

import pytest

from autocomp.app.config import RunConfig, build_config, load_config
from autocomp.compress.criteria import criterion_names
from autocomp.cost.latency import DEVICES, LatencySettings
from autocomp.errors import ConfigError
from autocomp.evaluate import FIDELITY_LEVELS, EvaluatorSettings, Fidelity, ProxyTraining, Scoring
from autocomp.settings import check
from autocomp.train import Distillation, TrainSettings
from search_spaces.dims import BitWidth, LowRank, PruneRatio
from search_spaces.metrics import METRICS
from search_spaces.space import GROUPINGS

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_its_unset_keys_are_the_library_defaults(path):
    config = load_config(path)
    given = config.to_dict()
    assert build_config(given).to_dict() == given  # what a run folder saves reads back the same
    assert config.evaluator.level().describe()  # a fidelity the library accepts
    if "proxy" not in path.read_text():
        assert config.evaluator.proxy == ProxyTraining()


def test_the_defaults_are_the_library_defaults():
    config = RunConfig()
    assert config.baseline == TrainSettings()
    assert config.latency == LatencySettings()
    assert config.evaluator.proxy == ProxyTraining()
    assert config.evaluator.level() == Fidelity()
    scoring = {f.name: getattr(config.evaluator, f.name) for f in fields(Scoring)}
    assert scoring == asdict(Scoring()) | {"proxy": ProxyTraining()}
    assert (config.search.seed, config.search.criterion, config.search.reconstruct) == (
        EvaluatorSettings.seed,
        EvaluatorSettings.criterion,
        EvaluatorSettings.reconstruct,
    )
    assert (config.finetune.temperature, config.finetune.alpha) == (Distillation.temperature, Distillation.alpha)
    assert config.finetune.training() == TrainSettings(epochs=2, lr=0.02)
    assert config.space.keep is not None and config.space.keep.dim() == PruneRatio()
    bits = build_config({"space": {"weight_bits": {}}}).space.weight_bits
    assert bits is not None and bits.dim("weights") == BitWidth()
    rank = build_config({"space": {"rank": {}}}).space.rank
    assert rank is not None and rank.dim() == LowRank()


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"evaluator": {"fidelity": "fast"}}, "evaluator.fidelity", FIDELITY_LEVELS),
        ({"latency": {"device": "tpu"}}, "latency.device", DEVICES),
        ({"space": {"keep": {"grouping": "block"}}}, "space.keep.grouping", GROUPINGS),
        ({"constraints": [{"metric": "joules", "max": 0.5}]}, "constraints.0.metric", METRICS),
    ],
)
def test_allowed_values_are_the_constants(settings, key, allowed):
    with pytest.raises(ConfigError, match=f"config key '{key}' = .* is not allowed: use one of {', '.join(allowed)}"):
        build_config(settings)


def test_library_settings_check_their_annotated_bounds_in_one_sentence():
    with pytest.raises(ConfigError, match=r"^training epochs must be a positive integer, not 0\.$"):
        TrainSettings(epochs=0)
    with pytest.raises(ConfigError, match=r"^training momentum must be in \[0, 1\), not 1\.0\.$"):
        TrainSettings(momentum=1.0)
    with pytest.raises(ConfigError, match=r"^keep low must be in \(0, 1\], not 0\.$"):
        PruneRatio(0)
    with pytest.raises(ConfigError, match=r"^rank scheme 'triple' is not allowed; allowed: pair, separable\.$"):
        LowRank(scheme="triple")
    check(EvaluatorSettings(criterion=criterion_names()[0]), "evaluator")


def test_a_bounded_library_setting_is_refused_naming_its_config_key():
    with pytest.raises(ConfigError, match=r"config key 'baseline.epochs' = 0 is not allowed"):
        build_config({"baseline": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"unknown config key 'latency.colour'"):
        build_config({"latency": {"colour": "blue"}})
    with pytest.raises(
        ConfigError, match=r"config section 'space.weight_bits' is not allowed: bit-width range \[6, 4\]"
    ):
        build_config({"space": {"weight_bits": {"low": 6, "high": 4}}})
