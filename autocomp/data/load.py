"""`load_dataset`: a data set by name, with its deterministic held-out split."""

from __future__ import annotations

import inspect
import numbers
import os

from torch.utils.data import Dataset, IterableDataset, TensorDataset

from autocomp.data.batching import dataset_length
from autocomp.data.bundle import DataBundle, TrainTest
from autocomp.data.digits import load_digits
from autocomp.data.fashion_mnist import load_fashion_mnist
from autocomp.data.image_folder import IMAGE_FOLDER_OPTIONS, load_image_folder
from autocomp.data.split import hold_out, val_count
from autocomp.data.synthetic import make_synthetic
from autocomp.data.user_factory import load_data_factory
from autocomp.errors import DataError

DATASETS = ("fashion_mnist", "digits", "synthetic", "image_folder", "factory")


SYNTHETIC_OPTIONS = tuple(
    p.name for p in inspect.signature(make_synthetic).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
)
OPTIONS = {"synthetic": SYNTHETIC_OPTIONS, "image_folder": IMAGE_FOLDER_OPTIONS}
"""The options each built-in data set takes (a factory takes its function's own)."""


def _train_test(
    name: str, data_dir: str | os.PathLike | None, seed: int, options: dict, factory: str | None
) -> TrainTest:
    if name == "factory":
        if factory is None:
            raise DataError(
                "data set 'factory' needs data.factory, the import path of your function (package.module:function)."
            )
        return load_data_factory(factory, **options)
    allowed = OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
        raise DataError(f"data set {name!r} {takes}; got unknown option(s) {', '.join(unknown)}.")
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir)
    if name == "digits":
        return load_digits()
    if name == "image_folder":
        if data_dir is None:
            raise DataError("data set 'image_folder' needs data.dir, the folder holding train/ and test/.")
        return load_image_folder(data_dir, **options)
    return make_synthetic(seed, **options)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int | float = 5000,
    seed: int = 0,
    factory: str | None = None,
    **options: object,
) -> DataBundle:
    """The data set ``name`` (one of `DATASETS`), ``val_size`` training examples held out by ``seed``.

    ``val_size`` is a count (int) or a fraction in (0, 1) (float) of the training set, and may hold
    out at most half of it. ``data_dir`` is where Fashion-MNIST's files are (see `find_fashion_mnist`),
    or the image folder (`load_image_folder`); digits and synthetic ignore it. ``options`` go to
    `make_synthetic` (the synthetic set is also drawn from ``seed``), `load_image_folder`, or the
    function at ``factory`` (name ``factory``, see `load_data_factory`); the other data sets take none.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not -(2**63) <= seed < 2**64:
        raise DataError(f"data seed must be an integer in [-2**63, 2**64), not {seed!r}.")
    parts = _train_test(name, data_dir, int(seed), options, factory)
    train, val = hold_out(
        parts.train, val_count(val_size, dataset_length(parts.train), name), int(seed), parts.held_out_view
    )
    channels, height, width = image_shape(parts.train)
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=parts.test,
        num_classes=parts.num_classes,
        in_channels=channels,
        image_size=(height, width),
    )


def image_shape(data: Dataset) -> tuple[int, int, int]:
    """(C, H, W) of ``data``'s images: from its tensors, its ``image_shape``, else its first example."""
    if isinstance(data, TensorDataset):
        return tuple(data.tensors[0].shape[1:])  # type: ignore[return-value]
    if hasattr(data, "image_shape"):
        return tuple(data.image_shape)
    first = next(iter(data)) if isinstance(data, IterableDataset) else data[0]
    return tuple(first[0].shape)
