"""Image-classification data sets in memory: Fashion-MNIST, scikit-learn's digits, a synthetic set.

    data = load_dataset("fashion_mnist", val_size=5000, seed=0)
    for images, labels in iterate_batches(data.train, 128, shuffle=True, seed=0, epoch=0):
        ...
"""

from autocomp.data.batching import iterate_batches, num_batches
from autocomp.data.bundle import DataBundle
from autocomp.data.fashion_mnist import find_fashion_mnist
from autocomp.data.idx import read_idx
from autocomp.data.load import DATASETS, load_dataset

__all__ = ["DATASETS", "DataBundle", "find_fashion_mnist", "iterate_batches", "load_dataset", "num_batches",
           "read_idx"]
