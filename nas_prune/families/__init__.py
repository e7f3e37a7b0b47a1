"""Model families: one file per family, one line per family in :data:`FAMILIES`."""

from __future__ import annotations

from ..errors import UserError
from ._base import Family, InputShape, WidthGroup, Widths, init_weights
from .channel_bench import ChannelBenchMobileNet, ChannelBenchResNet
from .graph import GraphFamily
from .resnet_cifar import ResNetCifar
from .vgg import VGG

__all__ = ["FAMILIES", "Family", "InputShape", "WidthGroup", "Widths", "get_family",
           "init_weights"]

FAMILIES: dict[str, type[Family]] = {
    "vgg": VGG,
    "resnet_cifar": ResNetCifar,
    "graph": GraphFamily,
    "cbm_resnet": ChannelBenchResNet,
    "cbm_mobilenet": ChannelBenchMobileNet,
}


def get_family(name: str, args: dict | None, input_shape: InputShape) -> Family:
    """Instantiate family ``name`` with its keyword ``args``; unknown names list the valid ones."""
    if name not in FAMILIES:
        raise UserError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    try:
        return FAMILIES[name](input_shape=input_shape, **(args or {}))
    except TypeError as exc:
        raise UserError(f"bad arguments for family {name!r}: {exc}") from None
