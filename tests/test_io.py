import copy
import pickle

import pytest
import torch

import autocomp
from autocomp.graph import ModelGraph

X = torch.randn(3, 1, 28, 28)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(1)
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1)
    groups = ModelGraph(copy.deepcopy(model), X[:1]).groups  # coupled layers share one ratio
    policy = autocomp.Policy({layer: autocomp.LayerDecision(0.5 if group.index % 2 else 0.75)
                              for group in groups for layer in group.layers})
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
        pickle.dump(autocomp.Policy(), f, protocol=2)
    with pytest.raises(autocomp.ConfigError, match="evil.pt"):
        autocomp.load(path)


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(autocomp.ConfigError, match="nothing.pt"):
        autocomp.load(tmp_path / "nothing.pt")
