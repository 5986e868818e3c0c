"""autocomp.data: IDX reading, finding and loading Fashion-MNIST, digits, synthetic, splits and batching."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from autocomp.data import (
    DataBundle,
    as_tensors,
    fashion_mnist,
    find_fashion_mnist,
    iterate_batches,
    load_dataset,
    num_batches,
    read_idx,
)
from autocomp.data.split import split_indices
from autocomp.errors import ConfigError, DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (unsigned bytes) in the IDX format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_fake_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> None:
    """Small Fashion-MNIST files: training images raw, the rest gzip-compressed (both forms are read)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


@pytest.fixture
def no_system_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system folder points at an empty place and AUTOCOMP_DATA is unset."""
    monkeypatch.delenv("AUTOCOMP_DATA", raising=False)
    system = tmp_path / "system"
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", system)
    return system


# --- IDX files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_idx_round_trips_raw_and_gz(tmp_path, name):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (7,) if "idx1" in name else (5, 3, 4)).astype(np.uint8)
    result = read_idx(write_idx(tmp_path / name, array))
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, array)


def corrupt_files(folder: Path) -> dict[str, Path]:
    good = idx_bytes(np.arange(24).reshape(2, 3, 4))
    cases = {
        "wrong magic": b"\x00\x00\x09\x03" + good[4:],
        "truncated": good[:-5],
        "truncated header": good[:9],
        "trailing bytes": good + b"\x00\x01",
    }
    paths = {}
    for label, data in cases.items():
        paths[label] = folder / f"{label.replace(' ', '-')}-idx3-ubyte"
        paths[label].write_bytes(data)
    paths["not gzip"] = folder / "not-gzip-idx3-ubyte.gz"
    paths["not gzip"].write_bytes(good)
    paths["truncated gzip"] = folder / "cut-idx3-ubyte.gz"
    paths["truncated gzip"].write_bytes(gzip.compress(good)[:-12])
    return paths


@pytest.mark.parametrize(
    "label", ["wrong magic", "truncated", "truncated header", "trailing bytes", "not gzip", "truncated gzip"]
)
def test_read_idx_refuses_corrupt_files_naming_them(tmp_path, label):
    path = corrupt_files(tmp_path)[label]
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_read_idx_explains_what_is_wrong(tmp_path):
    paths = corrupt_files(tmp_path)
    with pytest.raises(DataError, match=r"bad magic number 0x00000903 .*0x00000801 or 0x00000803"):
        read_idx(paths["wrong magic"])
    with pytest.raises(DataError, match="2 bytes too long"):
        read_idx(paths["trailing bytes"])
    with pytest.raises(DataError, match="does not decompress as gzip"):
        read_idx(paths["not gzip"])
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "absent-idx1-ubyte")


# --- finding Fashion-MNIST -----------------------------------------------------------------------------


def test_a_missing_data_dir_is_the_only_place_looked_and_the_error_says_how_to_get_the_data(tmp_path, monkeypatch):
    env = tmp_path / "env"
    write_fake_fashion_mnist(env)
    monkeypatch.setenv("AUTOCOMP_DATA", str(env))
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as caught:
        find_fashion_mnist(missing)
    message = str(caught.value)
    assert f"{missing} (no such folder)" in message
    assert str(env) not in message
    assert "apt-get install dataset-fashion-mnist" in message and "AUTOCOMP_DATA" in message


def test_the_error_lists_every_folder_looked_in_and_the_missing_files(tmp_path, monkeypatch, no_system_data):
    env = tmp_path / "env"
    (env / "fashion-mnist").mkdir(parents=True)
    write_idx(env / "train-labels-idx1-ubyte", np.zeros(3))
    monkeypatch.setenv("AUTOCOMP_DATA", str(env))
    with pytest.raises(DataError) as caught:
        find_fashion_mnist()
    message = str(caught.value)
    assert f"{env} (lacks train-images-idx3-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)" in message
    assert f"{env / 'fashion-mnist'} (lacks" in message
    assert f"{no_system_data} (no such folder)" in message


def test_fashion_mnist_is_found_under_autocomp_data_or_its_subfolder(tmp_path, monkeypatch, no_system_data):
    monkeypatch.setenv("AUTOCOMP_DATA", str(tmp_path))
    write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    assert find_fashion_mnist() == tmp_path / "fashion-mnist"
    write_fake_fashion_mnist(tmp_path)
    assert find_fashion_mnist() == tmp_path


# --- loading Fashion-MNIST -----------------------------------------------------------------------------


def test_a_small_fake_fashion_mnist_loads_normalised_and_split(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=40, n_test=12)
    data = load_dataset("fashion_mnist", data_dir=tmp_path, val_size=8)
    assert isinstance(data, DataBundle)
    assert (len(data.train), len(data.val), len(data.test)) == (32, 8, 12)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (28, 28))
    images, labels = as_tensors(data.test)
    assert images.shape == (12, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").astype(np.float32)
    expected = (raw / 255 - fashion_mnist.MEAN) / fashion_mnist.STD
    np.testing.assert_allclose(images[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [i % 10 for i in range(12)]
    assert data.example_input(3).shape == (3, 1, 28, 28)


@pytest.mark.parametrize(
    "problem, pattern",
    [
        ("count", "holds 40 images but .* holds 39 labels"),
        ("size", r"shape \(12, 27, 28\); Fashion-MNIST images must be N x 28 x 28"),
        ("label", "holds label 10; Fashion-MNIST labels are 0..9"),
    ],
)
def test_inconsistent_fashion_mnist_files_are_refused(tmp_path, problem, pattern):
    write_fake_fashion_mnist(tmp_path)
    if problem == "count":
        write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(39) % 10)
    elif problem == "size":
        write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((12, 27, 28)))
    else:
        write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 11)
    with pytest.raises(DataError, match=pattern):
        load_dataset("fashion_mnist", data_dir=tmp_path, val_size=4)


REAL = Path("/usr/share/datasets/fashion-mnist")
REAL_PRESENT = all(any((REAL / f"{name}{suffix}").is_file() for suffix in ("", ".gz")) for name in fashion_mnist.FILES)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_PRESENT, reason=f"Debian's dataset-fashion-mnist is not installed in {REAL}")
def test_the_real_fashion_mnist_loads(monkeypatch):
    monkeypatch.delenv("AUTOCOMP_DATA", raising=False)
    data = load_dataset("fashion_mnist", val_size=5000)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert len(data.train) + len(data.val) == 60000
    assert torch.bincount(as_tensors(data.test)[1]).tolist() == [1000] * 10
    assert (
        abs(as_tensors(data.train)[0].mean().item()) < 0.01 and abs(as_tensors(data.train)[0].std().item() - 1) < 0.01
    )


# --- held-out split ------------------------------------------------------------------------------------


def test_the_split_is_deterministic_by_seed_and_disjoint():
    train, val = split_indices(100, 20, seed=3)
    again_train, again_val = split_indices(100, 20, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_indices(100, 20, seed=4)[1])
    assert len(val) == 20 and sorted(train.tolist() + val.tolist()) == list(range(100))


def test_bundles_of_the_same_seed_hold_out_the_same_examples(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    first, second = (load_dataset("fashion_mnist", data_dir=tmp_path, val_size=0.25, seed=7) for _ in range(2))
    other = load_dataset("fashion_mnist", data_dir=tmp_path, val_size=0.25, seed=8)
    assert len(first.val) == 10
    assert torch.equal(as_tensors(first.val)[0], as_tensors(second.val)[0])
    assert not torch.equal(as_tensors(first.val)[0], as_tensors(other.val)[0])
    together = torch.cat([as_tensors(first.train)[0], as_tensors(first.val)[0]]).flatten(1)
    assert torch.unique(together, dim=0).shape[0] == 40


@pytest.mark.parametrize("val_size", [0, -3, 0.0, 1.0, 1.5, 0.001, 21, 0.6, True, "8", None])
def test_bad_val_sizes_are_refused(tmp_path, val_size):
    write_fake_fashion_mnist(tmp_path, n_train=40)
    with pytest.raises(DataError, match="val_size"):
        load_dataset("fashion_mnist", data_dir=tmp_path, val_size=val_size)


def test_a_val_size_leaving_less_than_half_for_training_names_the_maximum():
    with pytest.raises(DataError, match=r"val_size 5000 .* 1438 training examples of digits.*at most 719"):
        load_dataset("digits")


def test_unknown_data_sets_and_options_are_refused():
    with pytest.raises(DataError, match="unknown data set 'cifar10'; allowed: fashion_mnist, digits, synthetic"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match=r"'digits' takes no options; got unknown option.* n_train"):
        load_dataset("digits", val_size=300, n_train=5)
    with pytest.raises(DataError, match=r"'synthetic' takes only .*; got unknown option.* colour"):
        load_dataset("synthetic", val_size=10, colour=True)
    with pytest.raises(DataError, match="num_classes must be an integer of at least 2"):
        load_dataset("synthetic", val_size=10, num_classes=1)
    with pytest.raises(DataError, match="image_size must be one integer or a pair"):
        load_dataset("synthetic", val_size=10, image_size=(4, 4, 4))


# --- digits and synthetic ------------------------------------------------------------------------------


def test_digits_load_with_a_fixed_test_split():
    data = load_dataset("digits", val_size=300, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1138, 300, 359)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (8, 8))
    assert as_tensors(data.train)[0].shape == (1138, 1, 8, 8) and as_tensors(data.train)[1].dtype == torch.int64
    assert set(as_tensors(data.test)[1].tolist()) == set(range(10))
    other_seed = load_dataset("digits", val_size=300, seed=1)
    assert torch.equal(as_tensors(data.test)[0], as_tensors(other_seed.test)[0])
    assert not torch.equal(as_tensors(data.val)[0], as_tensors(other_seed.val)[0])


def test_digits_read_from_the_bundled_file_are_scikit_learns_own():
    from sklearn.datasets import load_digits as sklearn_digits

    from autocomp.data.digits import _read_bundled_file

    images, labels = _read_bundled_file()
    reference = sklearn_digits()
    assert torch.equal(images, torch.from_numpy(reference.images).float().div(16).unsqueeze(1))
    assert torch.equal(labels, torch.from_numpy(reference.target).long())


def test_synthetic_is_deterministic_by_seed_and_shaped_by_its_options():
    options = {"n_train": 60, "n_test": 30, "num_classes": 3, "in_channels": 2, "image_size": [5, 7]}
    first, second = (load_dataset("synthetic", val_size=12, seed=5, **options) for _ in range(2))
    other = load_dataset("synthetic", val_size=12, seed=6, **options)
    for part in ("train", "val", "test"):
        assert torch.equal(as_tensors(getattr(first, part))[0], as_tensors(getattr(second, part))[0])
        assert not torch.equal(as_tensors(getattr(first, part))[0], as_tensors(getattr(other, part))[0])
    assert (len(first.train), len(first.val), len(first.test)) == (48, 12, 30)
    assert (first.num_classes, first.in_channels, first.image_size) == (3, 2, (5, 7))
    assert first.example_input().shape == (1, 2, 5, 7)


def test_synthetic_is_learnable():
    data = load_dataset("synthetic", val_size=64, seed=0)
    images, labels = as_tensors(data.train)
    means = torch.stack([images[labels == c].mean(0) for c in range(data.num_classes)]).flatten(1)
    test_images, test_labels = as_tensors(data.test)
    predicted = torch.cdist(test_images.flatten(1), means).argmin(1)
    assert (predicted == test_labels).float().mean().item() > 0.5


# --- batching ------------------------------------------------------------------------------------------


def counting_dataset(n: int = 23) -> TensorDataset:
    return TensorDataset(torch.arange(n).float().view(n, 1, 1, 1), torch.arange(n))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_comes_exactly_once_per_epoch(shuffle):
    data = counting_dataset()
    batches = list(iterate_batches(data, 5, shuffle=shuffle, seed=2, epoch=1))
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 3] == [5] * (num_batches(data, 5) - 1) + [3]
    seen = torch.cat([labels for _, labels in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert all(torch.equal(images.view(-1).long(), labels) for images, labels in batches)
    assert (seen.tolist() == list(range(23))) is not shuffle


def test_the_shuffle_depends_only_on_seed_and_epoch():
    data = counting_dataset()

    def order(seed, epoch):
        return torch.cat([labels for _, labels in iterate_batches(data, 4, shuffle=True, seed=seed, epoch=epoch)])

    assert torch.equal(order(0, 3), order(0, 3))
    assert not torch.equal(order(0, 3), order(0, 4))
    assert not torch.equal(order(0, 3), order(1, 3))
    resumed = [labels for index, (_, labels) in enumerate(iterate_batches(data, 4, True, 0, 3)) if index >= 2]
    assert torch.equal(torch.cat(resumed), order(0, 3)[8:])


def test_drop_last_and_bad_batch_sizes():
    data = counting_dataset()
    batches = list(iterate_batches(data, 5, shuffle=True, drop_last=True))
    assert len(batches) == num_batches(data, 5, drop_last=True) == 4
    assert all(len(labels) == 5 for _, labels in batches)
    assert num_batches(data, 30, drop_last=True) == 0 and num_batches(data, 30) == 1
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
            iterate_batches(data, bad)
