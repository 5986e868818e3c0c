import pickle

import pytest
import torch

import autocomp

X = torch.randn(3, 1, 28, 28)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(1)
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1)
    layers = autocomp.prunable_layers(model, X[:1])
    policy = autocomp.Policy({layer.name: autocomp.LayerDecision(0.5 if i % 2 else 0.75)
                              for i, layer in enumerate(layers)})
    # coupled layers must agree: give every group its first member's ratio
    by_group = {}
    for layer in layers:
        by_group.setdefault(layer.group, policy.keep(layer.name))
    policy = autocomp.Policy({layer.name: autocomp.LayerDecision(by_group[layer.group]) for layer in layers})
    small = autocomp.compress(model, policy, X[:1]).eval()
    path = tmp_path / "small.pt"
    autocomp.save(small, path, X[:1])
    again = autocomp.load(path)
    assert torch.equal(again(X), small(X))
    assert autocomp.measure(again, X[:1]) == autocomp.measure(small, X[:1])


def test_the_file_holds_plain_data_only(tmp_path):
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    path = tmp_path / "m.pt"
    autocomp.save(model, path, X[:1])
    payload = torch.load(path, weights_only=True)  # raises if anything but tensors and plain types is inside
    assert payload["factory"]["name"] == "resnet20"


def test_loading_refuses_a_pickled_object(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump(autocomp.Policy(), f)
    with pytest.raises(autocomp.ConfigError, match="evil.pt"):
        autocomp.load(path)


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(autocomp.ConfigError, match="nothing.pt"):
        autocomp.load(tmp_path / "nothing.pt")
