"""Image-classification data sets: Fashion-MNIST, scikit-learn's digits, a synthetic set (in memory), and a user's own
(an image folder, read lazily when it is large, or the data sets a Python function returns).

    data = load_dataset("fashion_mnist", val_size=5000, seed=0)
    for images, labels in iterate_batches(data.train, 128, shuffle=True, seed=0, epoch=0):
        ...
"""

from autocomp.data.batching import BatchReader, as_tensors, iterate_batches, num_batches
from autocomp.data.bundle import DataBundle
from autocomp.data.fashion_mnist import find_fashion_mnist
from autocomp.data.idx import read_idx
from autocomp.data.image_folder import load_image_folder
from autocomp.data.load import DATASETS, load_dataset
from autocomp.data.user_factory import load_data_factory

__all__ = [
    "DATASETS",
    "BatchReader",
    "DataBundle",
    "as_tensors",
    "find_fashion_mnist",
    "iterate_batches",
    "load_data_factory",
    "load_dataset",
    "load_image_folder",
    "num_batches",
    "read_idx",
]
