"""Training in channels-last layout: the same training, a contiguous model afterwards."""

import copy
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.data import TensorDataset

import autocomp
from autocomp.memory_format import channels_last
from autocomp.train import TrainSettings, train


def test_a_model_leaves_the_block_contiguous_with_the_same_parameters_and_outputs():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    x, before = torch.randn(4, 1, 28, 28), list(model.parameters())
    expected = model(x)
    with channels_last(model) as layout:
        weights = [
            m.weight
            for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1 and m.kernel_size != (1, 1)
        ]
        assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights)
        assert layout(x).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(layout(x)), expected, rtol=1e-4, atol=1e-5)
    assert all(a is b for a, b in zip(model.parameters(), before))  # an optimizer made before still holds them
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_training_step_in_channels_last_makes_the_contiguous_update(monkeypatch):
    """Float32 sums in another order (BatchNorm's reductions differ most), so one step is compared: a whole run drifts."""
    data = TensorDataset(torch.randn(32, 1, 12, 12), torch.randint(0, 10, (32,)))
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    reference, start = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.05)
    train(model, data, settings)
    monkeypatch.setattr("autocomp.train.channels_last", lambda model: nullcontext(lambda images: images))
    train(reference, data, settings)
    assert all(p.is_contiguous() for p in model.parameters())
    moved = max(
        (reference.state_dict()[name] - value).abs().max().item()
        for name, value in start.items()
        if value.is_floating_point()
    )
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], rtol=0, atol=1e-3 * moved, msg=name)
