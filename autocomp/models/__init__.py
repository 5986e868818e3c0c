"""The zoo: resnet20/32/56 (CIFAR-style), mobilenet_v2 (width_mult), vgg_small; any in_channels/num_classes."""

from autocomp.models import mobilenet_v2, resnet_cifar, vgg  # noqa: F401  (registers the models)
from autocomp.models.registry import create, factory_record, names, register

__all__ = ["create", "factory_record", "names", "register"]
