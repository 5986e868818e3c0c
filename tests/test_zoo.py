import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import autocomp
from autocomp.models.mobilenet_v2 import make_divisible


@pytest.mark.parametrize("name", autocomp.zoo.names())
@pytest.mark.parametrize("in_channels, num_classes, size", [(1, 10, 28), (3, 7, 32)])
def test_every_model_classifies_any_channels_and_classes(name, in_channels, num_classes, size):
    model = autocomp.zoo.create(name, num_classes=num_classes, in_channels=in_channels).eval()
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, num_classes)


def resnet_params_by_hand(blocks: int, in_channels: int, num_classes: int) -> int:
    bn = lambda c: 2 * c  # noqa: E731
    total = in_channels * 16 * 9 + bn(16)
    width = 16
    for out in (16, 32, 64):
        for block in range(blocks):
            total += width * out * 9 + bn(out) + out * out * 9 + bn(out)
            if width != out:
                total += width * out + bn(out)
            width = out
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("name, blocks", [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_resnet_parameter_counts_match_a_hand_count(name, blocks):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) == resnet_params_by_hand(blocks, 3, 10)


def test_mobilenet_v2_has_the_reference_parameter_count():
    model = autocomp.zoo.create("mobilenet_v2", num_classes=1000, in_channels=3, small_input=False)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_mobilenet_v2_width_multiplier_rounds_channels_to_multiples_of_8():
    full = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=3)
    half = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=3, width_mult=0.5)
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters()) / 2
    assert all(m.out_channels % 8 == 0 for m in half.modules() if isinstance(m, nn.Conv2d))
    assert make_divisible(0.5 * 24) == 16  # rounds up when the nearest multiple would lose more than 10%


def test_the_factory_record_survives_deepcopy_and_rebuilds_the_architecture():
    model = autocomp.zoo.create("mobilenet_v2", num_classes=5, in_channels=2, width_mult=0.75)
    record = autocomp.zoo.factory_record(copy.deepcopy(model))
    assert record == {"name": "mobilenet_v2", "kwargs": {"num_classes": 5, "in_channels": 2, "width_mult": 0.75}}
    rebuilt = autocomp.zoo.create(record["name"], **record["kwargs"])
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(model)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"name": "resnet21"}, "'resnet21'"),
        ({"name": "resnet20", "depth": 3}, "'depth'"),
        ({"name": "resnet20", "width_mult": 0}, "width_mult=0"),
        ({"name": "resnet20", "num_classes": 1}, "num_classes=1"),
    ],
)
def test_bad_arguments_are_refused_by_name(args, message):
    with pytest.raises(autocomp.ConfigError, match=message):
        autocomp.zoo.create(**args)


def test_resnet_stage1_residual_stream_is_one_torch_pruning_group():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28), verbose=False)
    stream = {model.conv1, model.layer1[0].conv2, model.layer1[1].conv2, model.layer1[2].conv2}
    groups = [{dep.target.module for dep, _ in group}
              for group in graph.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d, nn.Linear])]
    assert any(stream <= members for members in groups)
