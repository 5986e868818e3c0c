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
    policy = autocomp.Policy(
        {layer: autocomp.LayerDecision(0.5 if group.index % 2 else 0.75) for group in groups for layer in group.layers}
    )
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
    with pytest.raises(autocomp.ConfigError, match=r"evil.pt"):
        autocomp.load(path)


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(autocomp.ConfigError, match=r"nothing.pt"):
        autocomp.load(tmp_path / "nothing.pt")


def _program_file(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 3)
    )
    model.train()
    path = tmp_path / "net.pt"
    autocomp.save(model, path, X[:1])
    assert model.training and all(m.training for m in model.modules())  # saving left the caller's modes alone
    return path


def _rewrite_program(path, edit):
    """Rewrite the torch.export archive inside an autocomp model file with ``edit(entries)``."""
    import io
    import zipfile

    payload = torch.load(path, weights_only=True)
    source = zipfile.ZipFile(io.BytesIO(payload["program"]))
    entries = {name: source.read(name) for name in source.namelist()}
    edit(entries)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name, data in entries.items():
            target.writestr(name, data)
    payload["program"] = buffer.getvalue()
    torch.save(payload, path)


def _add_opaque_object(entries):
    top = next(iter(entries)).split("/")[0]
    entries[f"{top}/data/constants/opaque_obj_0"] = pickle.dumps(autocomp.Policy())


def _pickle_the_weights(entries):
    name = next(n for n in entries if n.endswith("data/weights/model_weights_config.json"))
    entries[name] = (
        entries[name]
        .replace(b'"use_pickle": false', b'"use_pickle": true')
        .replace(b'"use_pickle":false', b'"use_pickle":true')
    )


@pytest.mark.parametrize("edit, what", [(_add_opaque_object, "opaque_obj_0"), (_pickle_the_weights, "pickled weights")])
def test_a_program_that_would_unpickle_is_refused(tmp_path, edit, what):
    path = _program_file(tmp_path)
    assert autocomp.load(path)(X).shape == (3, 3)  # the genuine file loads
    _rewrite_program(path, edit)
    with pytest.raises(autocomp.ConfigError, match=f"{what}.*could run code"):
        autocomp.load(path)


def test_a_file_without_program_or_recipe_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"format": "autocomp.model", "version": 2, "input_shape": [1, 28, 28]}, path)
    with pytest.raises(autocomp.ConfigError, match="neither a program nor a recipe"):
        autocomp.load(path)
