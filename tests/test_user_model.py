"""A user's own model: an importable factory, its checkpoint, saving and trusted reloading, and a search over it."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

import autocomp
from autocomp.app.config import ModelConfig, build_config
from autocomp.errors import ConfigError
from autocomp.models.user import build_user_model, load_checkpoint

FACTORY_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    def make_net(num_classes, in_channels, width=8):
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


    def no_data_arguments(width=4):
        return nn.Sequential(nn.Conv2d(1, width, 3), nn.Flatten(), nn.LazyLinear(3))


    class DataDependent(nn.Module):
        """torch.export cannot capture it: its flow depends on the data."""

        def __init__(self, num_classes):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            x = self.conv(x)
            if x.sum() > 0:
                x = x * 2
            return self.head(x.mean((2, 3)))


    def not_a_model():
        return 42


    NOT_CALLABLE = 3
''')


@pytest.fixture()
def factory_module(user_module):
    return user_module("usernet", FACTORY_SOURCE)


def test_the_factory_gets_the_data_arguments_it_names_and_the_model_remembers_it(factory_module):
    model = build_user_model("usernet:make_net", num_classes=5, in_channels=3, width=6)
    assert model[0].in_channels == 3 and model[0].out_channels == 6 and model[-1].out_features == 5
    assert autocomp.zoo.factory_record(model) == {
        "import": "usernet:make_net",
        "num_classes": 5,
        "in_channels": 3,
        "kwargs": {"width": 6},
    }
    bare = build_user_model("usernet:no_data_arguments", num_classes=3, in_channels=1, width=2)  # takes neither
    assert bare[0].out_channels == 2


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (
            "usernet:make_net",
            {"depth": 3},
            r"^model.factory 'usernet:make_net' cannot be called with \['depth', 'in_channels', "
            r"'num_classes'\] .*set model.kwargs to its arguments\.$",
        ),
        ("usernet:not_a_model", {}, r"^model.factory 'usernet:not_a_model' returned int, not a torch.nn.Module\.$"),
        (
            "usernet:NOT_CALLABLE",
            {},
            r"^model.factory 'usernet:NOT_CALLABLE' names int object, not a function or class\.$",
        ),
        ("usernet:absent", {}, r"usernet:absent"),
        ("nosuchmodule_xyz:make", {}, r"nosuchmodule_xyz"),
    ],
)
def test_a_factory_that_cannot_build_a_model_is_refused_in_one_sentence(factory_module, factory, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_user_model(factory, num_classes=3, in_channels=1, **kwargs)


def test_a_checkpoint_loads_as_a_state_dict_under_common_keys_and_without_a_dataparallel_prefix(
    factory_module, tmp_path
):
    trained = build_user_model("usernet:make_net", 4, 1)
    nn.init.normal_(trained[0].weight)
    state = trained.state_dict()
    for i, content in enumerate(
        [state, {"state_dict": state, "epoch": 3}, {"model": {f"module.{k}": v for k, v in state.items()}}]
    ):
        torch.save(content, tmp_path / f"c{i}.pt")
        fresh = build_user_model("usernet:make_net", 4, 1)
        load_checkpoint(fresh, tmp_path / f"c{i}.pt")
        assert torch.equal(fresh[0].weight, trained[0].weight)


def test_a_checkpoint_that_does_not_fit_or_holds_code_is_refused(factory_module, tmp_path):
    model = build_user_model("usernet:make_net", 4, 1)
    wider = build_user_model("usernet:make_net", 4, 1, width=16)
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    with pytest.raises(ConfigError, match=r"wider.pt' does not fit the model \(size mismatch for 0.weight"):
        load_checkpoint(model, tmp_path / "wider.pt")
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("8.")}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match=r"2 missing and 0 unexpected keys, first missing '8.bias'"):
        load_checkpoint(model, tmp_path / "partial.pt")
    torch.save(model, tmp_path / "pickled.pt")  # a whole pickled module: loading it would run code
    with pytest.raises(ConfigError) as refused:
        load_checkpoint(model, tmp_path / "pickled.pt")
    assert str(refused.value) == (
        f"model.checkpoint {str(tmp_path / 'pickled.pt')!r} holds pickled Python objects "
        "(torch.nn.modules.container.Sequential), which autocomp does not load; save "
        "model.state_dict() with torch.save."
    )
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ConfigError, match=r"text.pt' cannot be read as weights \(.*\); save model.state_dict\(\)"):
        load_checkpoint(model, tmp_path / "text.pt")
    with pytest.raises(ConfigError, match=r"absent.pt' does not exist"):
        load_checkpoint(model, tmp_path / "absent.pt")


def test_a_saved_user_model_reloads_its_program_unless_its_factory_is_trusted(factory_module, tmp_path):
    x = torch.randn(3, 1, 8, 8)
    model = build_user_model("usernet:make_net", 4, 1).eval()
    small = autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, x[:1]), keep=0.5), x[:1])
    autocomp.save(small, tmp_path / "small.pt", x[:1])
    program = autocomp.load(tmp_path / "small.pt")  # nothing imported: the torch.export program
    trusted = autocomp.load(tmp_path / "small.pt", trust_factory="usernet:make_net")
    assert isinstance(trusted, nn.Sequential) and trusted[0].out_channels == small[0].out_channels < 8
    with torch.no_grad():
        assert torch.allclose(program(x), small(x), atol=1e-5) and torch.allclose(trusted(x), small(x), atol=1e-5)
    assert not isinstance(program, nn.Sequential)
    assert program.eval() is program and program.train(False) is program and not program.training
    with torch.no_grad():
        assert torch.allclose(program.to("cpu", torch.float64)(x.double()), small.double()(x.double()), atol=1e-10)
    with pytest.raises(
        ConfigError,
        match=r"^a model loaded as its torch.export program runs inference only and "
        r"cannot be trained; load it with its factory",
    ):
        program.train()


def test_an_unexportable_user_model_needs_its_factory_trusted_to_load(factory_module, tmp_path):
    model = build_user_model("usernet:DataDependent", 3, 1).eval()
    autocomp.save(model, tmp_path / "m.pt", torch.zeros(1, 1, 8, 8))
    with pytest.raises(
        ConfigError,
        match=r"^model file .*m.pt is rebuilt by importing 'usernet:DataDependent', which "
        r"runs that module's code; pass trust_factory='usernet:DataDependent'",
    ):
        autocomp.load(tmp_path / "m.pt")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(autocomp.load(tmp_path / "m.pt", trust_factory="usernet:DataDependent")(x), model(x))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"name": "resnet20", "factory": "a:b"},
            r"give model.name \(a zoo model\) or model.factory \(your own model\), not both",
        ),
        (
            {"factory": "a.b"},
            r"'model.factory' = 'a.b' is not allowed: it must be an import path of the form package.module:function",
        ),
        ({"name": "resnet21"}, r"unknown model 'resnet21'; allowed: .*or your own as model.factory"),
    ],
)
def test_a_model_section_names_one_zoo_model_or_one_factory(section, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"model": section})


def test_the_model_section_defaults_to_the_zoo_resnet20():
    assert ModelConfig().name == "resnet20" and ModelConfig().label == "resnet20"
    assert (
        ModelConfig(factory="pkg.nets:make").label == "pkg.nets:make"
        and ModelConfig(factory="pkg.nets:make").name is None
    )


def test_the_cost_command_counts_a_user_model_only_through_its_trusted_factory(factory_module, tmp_path):
    from typer.testing import CliRunner

    from autocomp.app.cli import app

    model = build_user_model("usernet:make_net", 4, 1)
    autocomp.save(model, tmp_path / "m.pt", torch.zeros(1, 1, 8, 8))
    refused = CliRunner().invoke(app, ["cost", str(tmp_path / "m.pt")])
    assert refused.exit_code == 2 and "pass --trust-factory usernet:make_net to rebuild it" in " ".join(
        refused.output.split()
    )
    counted = CliRunner().invoke(
        app, ["cost", str(tmp_path / "m.pt"), "--trust-factory", "usernet:make_net"], terminal_width=200
    )
    assert counted.exit_code == 0, counted.output
    by_hand = 8 * 1 * 9 * 64 + 16 * 8 * 9 * 64 + 16 * 4  # two 3x3 convs on 8x8, then the classifier
    assert f"MACs {by_hand:,}" in counted.output


def test_a_user_models_run_exports_from_its_program_without_importing_the_factory(factory_module, tmp_path):
    from autocomp.app.export import export_run

    model = build_user_model("usernet:make_net", 4, 1).eval()
    (tmp_path / "run").mkdir()
    autocomp.save(model, tmp_path / "run" / "model.pt", torch.zeros(1, 1, 8, 8))
    sys.modules.pop("usernet")
    exported = export_run(tmp_path / "run", tmp_path / "out")
    assert "usernet" not in sys.modules  # nothing was imported
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(torch.export.load(tmp_path / "out" / "model.pt2").module()(x), model(x), atol=1e-5)
    assert exported.max_difference <= 1e-4
