"""A user's own data: an image folder read with Pillow, and the data sets a Python function returns."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from autocomp.app.config import build_config
from autocomp.data import as_tensors, load_data_factory, load_dataset, load_image_folder
from autocomp.errors import ConfigError, DataError


def write_folder(root, classes=("cat", "ant", "bee"), per_class=(4, 2), size=(12, 10), rgb_class="bee"):
    """``root/train/<class>/i.png`` and ``root/test/...``; pixel value = 40 x class index + i (grey), RGB for one class."""
    for split, count in zip(("train", "test"), per_class):
        for c, name in enumerate(sorted(classes)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                value = np.full((size[1], size[0]), 40 * c + i, dtype=np.uint8)
                image = Image.fromarray(value, mode="L")
                (image.convert("RGB") if name == rgb_class else image).save(folder / f"{i}.png")
    return root


def test_an_image_folder_gives_sorted_class_labels_and_standardised_pixels(tmp_path):
    parts = load_image_folder(write_folder(tmp_path, rgb_class=None))
    images, labels = as_tensors(parts.train)
    assert parts.num_classes == 3 and images.shape == (12, 1, 10, 12) and images.dtype == torch.float32
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # ant, bee, cat
    assert abs(float(images.mean())) < 1e-5 and float(images.std()) == pytest.approx(1.0, rel=1e-4)
    raw = torch.tensor([[40.0 * c + i for i in range(4)] for c in range(3)]).flatten() / 255  # by hand
    std = raw.std(correction=0) * (120 * 12 / (120 * 12 - 1)) ** 0.5  # every pixel of an image alike: 120 per image
    assert torch.allclose(images[:, 0, 0, 0], (raw - raw.mean()) / std, atol=1e-5)
    test_images, test_labels = as_tensors(parts.test)
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.allclose(test_images[1, 0, 0, 0], (1 / 255 - raw.mean()) / std, atol=1e-5)  # train's statistics


def test_an_rgb_image_makes_the_folder_rgb_unless_channels_says_grey_and_image_size_resizes(tmp_path):
    root = write_folder(tmp_path)
    assert as_tensors(load_image_folder(root).train)[0].shape[1] == 3
    grey = as_tensors(load_image_folder(root, image_size=[5, 6], channels=1).train)[0]
    assert grey.shape == (12, 1, 5, 6)
    assert as_tensors(load_image_folder(root, image_size=7).test)[0].shape == (6, 3, 7, 7)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: (root / "train" / "cat" / "0.png").write_bytes(b"not a png"),
            r"^image .*cat/0.png cannot be read",
        ),
        (
            lambda root: Image.new("L", (3, 3)).save(root / "train" / "cat" / "9.png"),
            r"^image .*cat/9.png is 3x3 pixels, unlike the first image \(12x10\); set data.options.image_size",
        ),
        (
            lambda root: (
                (root / "test" / "dog").mkdir() or Image.new("L", (12, 10)).save(root / "test" / "dog" / "0.png")
            ),
            r"^test class folder .*dog has no training folder; allowed classes: ant, bee, cat\.$",
        ),
        (lambda root: (root / "train" / "empty").mkdir(), r"^class folder .*empty holds no images"),
        (
            lambda root: Image.fromarray(np.full((10, 12), 4000, dtype=np.uint16)).save(
                root / "test" / "ant" / "deep.png"
            ),
            r"^image .*ant/deep.png has 'I;16' pixels \(more than 8 bits\); autocomp reads 8-bit images",
        ),
    ],
)
def test_a_damaged_image_folder_is_refused_naming_the_file(tmp_path, damage, message):
    root = write_folder(tmp_path)
    damage(root)
    with pytest.raises(DataError, match=message):
        load_image_folder(root)


def test_an_image_folder_needs_train_and_test_folders_and_two_classes(tmp_path):
    with pytest.raises(DataError, match=r"^image folder .*train does not exist; data.dir must hold train/ and test/"):
        load_image_folder(tmp_path)
    write_folder(tmp_path, classes=("one",))
    with pytest.raises(DataError, match=r"holds 1 class folder\(s\); a classifier needs at least 2"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match=r"^data option channels=2 is not allowed; use 1 \(grey\) or 3 \(RGB\)\.$"):
        load_image_folder(tmp_path, channels=2)


def test_an_image_folder_config_holds_out_validation_images_and_refuses_unknown_options(tmp_path):
    write_folder(tmp_path, per_class=(10, 2))
    data = build_config({"data": {"name": "image_folder", "dir": str(tmp_path), "val_size": 6}}).data.load()
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 6) and data.image_size == (10, 12)
    with pytest.raises(
        DataError,
        match=r"^data set 'image_folder' takes only image_size, channels, augment, crop, in_memory; got unknown option\(s\) "
        r"size\.$",
    ):
        load_dataset("image_folder", data_dir=tmp_path, val_size=6, size=3)
    with pytest.raises(DataError, match=r"^data set 'image_folder' needs data.dir"):
        load_dataset("image_folder")


def test_the_image_folder_fingerprint_changes_with_its_files(tmp_path):
    root = write_folder(tmp_path)
    config = build_config({"data": {"name": "image_folder", "dir": str(root)}}).data
    before = config.fingerprint()
    Image.new("L", (12, 10)).save(root / "train" / "cat" / "new.png")
    assert config.fingerprint() != before and before != ""


FACTORY_SOURCE = textwrap.dedent("""
    import torch
    from torch.utils.data import Dataset, TensorDataset


    class Pairs(Dataset):
        def __init__(self, n, offset):
            self.n, self.offset = n, offset

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return torch.full((2, 4, 4), float(i + self.offset)), (i + self.offset) % 3


    def tensors(n_train=20, scale=1.0):
        x = torch.arange(n_train * 32, dtype=torch.float32).reshape(n_train, 2, 4, 4) * scale
        return TensorDataset(x, torch.arange(n_train) % 4), TensorDataset(x[:5], torch.arange(5) % 4)


    def pairs():
        return Pairs(12, 0), Pairs(6, 100), 5


    def bad_labels():
        return TensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 7])), TensorDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2)), 3


    def one_thing():
        return [1, 2]
""")


@pytest.fixture()
def data_module(user_module):
    return user_module("userdata", FACTORY_SOURCE)


def test_a_data_factory_returns_tensor_or_item_data_sets_kept_as_they_come(data_module):
    parts = load_data_factory("userdata:tensors", n_train=8, scale=2.0)
    images, labels = as_tensors(parts.train)
    assert images.shape == (8, 2, 4, 4) and float(images[1, 0, 0, 0]) == 64.0  # not standardised
    assert parts.num_classes == 4 and labels.dtype == torch.int64
    items = load_data_factory("userdata:pairs")
    assert items.num_classes == 5 and as_tensors(items.test)[0][2, 1, 3, 3] == 102.0
    assert as_tensors(items.train)[1].tolist() == [i % 3 for i in range(12)]
    data = build_config(
        {"data": {"name": "factory", "factory": "userdata:tensors", "val_size": 4, "options": {"n_train": 16}}}
    ).data.load()
    assert (len(data.train), len(data.val), data.in_channels, data.image_size) == (12, 4, 2, (4, 4))


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (
            "userdata:bad_labels",
            DataError,
            r"^data.factory 'userdata:bad_labels' returned label 7; labels must lie in \[0, 3\)\.$",
        ),
        (
            "userdata:one_thing",
            DataError,
            r"^data.factory 'userdata:one_thing' returned list; it must return \(train, test\)",
        ),
        (
            "userdata:absent",
            ConfigError,
            r"^data.factory 'userdata:absent' names nothing: userdata has no attribute 'absent'\.$",
        ),
        ("nosuch_data_module:load", ConfigError, r"^data.factory 'nosuch_data_module:load' cannot be imported"),
        (
            "userdata.tensors",
            ConfigError,
            r"^data.factory 'userdata.tensors' is not of the form module.path:attribute\.$",
        ),
    ],
)
def test_a_data_factory_that_gives_no_usable_data_is_refused_in_one_sentence(data_module, path, error, message):
    with pytest.raises(error, match=message):
        load_data_factory(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "factory"},
            r"data.factory \(package.module:function\) goes with data.name factory, and only with it",
        ),
        ({"name": "digits", "factory": "a:b"}, r"goes with data.name factory, and only with it"),
        ({"name": "factory", "factory": "a-b:c"}, r"must be an import path of the form package.module:function"),
    ],
)
def test_the_data_section_pairs_the_factory_with_its_name(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"data": data})
