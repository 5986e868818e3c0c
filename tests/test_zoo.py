import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import autocomp
from autocomp.models.mobilenet_v2 import make_divisible


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def final_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("name", autocomp.zoo.names())
@pytest.mark.parametrize("in_channels, num_classes", [(1, 10), (3, 7)])
def test_every_model_classifies_any_channels_and_classes(name, in_channels, num_classes):
    model = autocomp.zoo.create(name, num_classes=num_classes, in_channels=in_channels).eval()
    assert model(torch.randn(2, in_channels, 28, 28)).shape == (2, num_classes)


@pytest.mark.parametrize("name, kwargs", [("resnet20", {}), ("mobilenet_v2", {"small_input": False})])
def test_32x32_inputs_work(name, kwargs):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=3, **kwargs).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c


def basic_block(c: int) -> int:
    """A block that keeps the width c: two 3x3 conv-BN."""
    return 2 * (conv(c, c, 3) + bn(c))


def test_resnet20_parameter_count_by_hand():
    stem = conv(3, 16, 3) + bn(16)
    stage1 = 3 * basic_block(16)
    # first block of stages 2 and 3: 3x3 conv widening + BN, 3x3 conv + BN, 1x1 shortcut conv + BN
    stage2 = conv(16, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + conv(16, 32, 1) + bn(32) + 2 * basic_block(32)
    stage3 = conv(32, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64) + conv(32, 64, 1) + bn(64) + 2 * basic_block(64)
    fc = 64 * 10 + 10
    expected = stem + stage1 + stage2 + stage3 + fc
    assert expected == 272_474  # 269,722 of the paper's option-A ResNet-20 + 2,752 for the two shortcuts
    assert param_count(autocomp.zoo.create("resnet20", num_classes=10, in_channels=3)) == expected


@pytest.mark.parametrize("name, extra_blocks", [("resnet32", 2), ("resnet56", 6)])
def test_deeper_resnets_add_whole_blocks_per_stage(name, extra_blocks):
    base = param_count(autocomp.zoo.create("resnet20", num_classes=10, in_channels=3))
    deeper = param_count(autocomp.zoo.create(name, num_classes=10, in_channels=3))
    assert deeper - base == extra_blocks * sum(basic_block(c) for c in (16, 32, 64))


def test_width_mult_scales_resnet_channels():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=3, width_mult=0.5)
    assert (model.conv1.out_channels, model.layer2[0].conv2.out_channels, model.fc.in_features) == (8, 16, 32)


def test_mobilenet_v2_has_the_reference_parameter_count():
    model = autocomp.zoo.create("mobilenet_v2", num_classes=1000, in_channels=3, small_input=False)
    assert param_count(model) == 3_504_872


def test_mobilenet_v2_small_input_only_changes_two_strides():
    small = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=3)
    imagenet = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=3, small_input=False)
    strides = lambda m: [c.stride[0] for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert sum(a != b for a, b in zip(strides(small), strides(imagenet))) == 2
    assert (2 ** strides(imagenet).count(2), 2 ** strides(small).count(2)) == (32, 8)


def test_mobilenet_v2_width_multiplier_rounds_channels_to_multiples_of_8():
    full = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=1)
    half = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=1, width_mult=0.5)
    convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert param_count(half) < param_count(full) / 2
    assert convs[0].in_channels == 1
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert all(m.in_channels % 8 == 0 for m in convs[1:])
    assert half.classifier.in_features == 1280  # the last conv shrinks only for width_mult > 1
    assert make_divisible(0.5 * 24) == 16  # rounds up when the nearest multiple would lose more than 10%


def test_the_factory_record_survives_deepcopy_and_rebuilds_the_architecture():
    model = autocomp.zoo.create("mobilenet_v2", num_classes=5, in_channels=2, width_mult=0.75)
    record = autocomp.zoo.factory_record(copy.deepcopy(model))
    assert record == {"name": "mobilenet_v2", "kwargs": {"num_classes": 5, "in_channels": 2, "width_mult": 0.75}}
    rebuilt = autocomp.zoo.create(record["name"], **record["kwargs"])
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(model)
    assert autocomp.zoo.factory_record(nn.Linear(2, 2)) is None


@pytest.mark.parametrize(
    "args, message",
    [
        ({"name": "resnet21"}, r"'resnet21'.*resnet20, resnet32"),
        ({"name": "resnet20", "depth": 3}, "'depth'.*width_mult"),
        ({"name": "resnet20", "width_mult": 0}, "width_mult=0 "),
        ({"name": "resnet20", "num_classes": 1}, "num_classes=1 "),
        ({"name": "vgg_small", "in_channels": 0}, "in_channels=0 "),
        ({"name": "mobilenet_v2", "small_input": "yes"}, "small_input='yes'"),
    ],
)
def test_bad_arguments_are_refused_by_name(args, message):
    with pytest.raises(autocomp.ConfigError, match=message):
        autocomp.zoo.create(**args)


@pytest.mark.parametrize("name", autocomp.zoo.names())
def test_torch_pruning_groups_every_model(name):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1, width_mult=0.5)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28), verbose=False)
    groups = list(graph.get_all_groups(ignored_layers=[final_linear(model)], root_module_types=[nn.Conv2d, nn.Linear]))
    assert len(groups) >= 1


def test_resnet_stage1_residual_stream_is_one_torch_pruning_group():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28), verbose=False)
    stream = {model.conv1, model.layer1[0].conv2, model.layer1[1].conv2, model.layer1[2].conv2}
    groups = [
        {dep.target.module for dep, _ in group}
        for group in graph.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d, nn.Linear])
    ]
    assert any(stream <= members for members in groups)
