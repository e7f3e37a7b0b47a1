"""The family interface: a parameterised network built from a width vector.

A *width group* is a set of layers whose output channel counts must be equal (for example every
block output of a residual stage, which the shortcut additions couple). A width vector maps each
group name to an absolute channel count. A family knows its groups, the modules in each, which
modules consume each group's channels, and how to build an ``nn.Module`` from a width vector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

Widths = dict[str, int]


@dataclass(frozen=True)
class InputShape:
    """Shape of one input image and the number of classes."""

    channels: int
    size: int
    classes: int

    def to_dict(self) -> dict[str, int]:
        return {"channels": self.channels, "size": self.size, "classes": self.classes}


@dataclass(frozen=True)
class WidthGroup:
    """One width group of a family.

    ``convs`` are the module names (as in ``model.get_submodule``) of the conv layers whose output
    channels make up the group, ``bns`` their BatchNorm layers in the same order, and ``consumers``
    the conv/linear layers that read the group's channels as input. ``residual`` marks a group
    coupled by shortcut additions. ``depthwise`` names the convs among ``convs`` that are
    depthwise (``groups == in_channels == out_channels``): their input channels are the group's
    too, so a width change resizes their input, output and ``groups`` together; they are never
    ``consumers``.
    """

    name: str
    base: int
    convs: tuple[str, ...]
    bns: tuple[str, ...]
    consumers: tuple[str, ...]
    residual: bool = False
    depthwise: tuple[str, ...] = ()


class Family(ABC):
    """A network family: width groups plus a builder.

    Subclasses take their own keyword arguments (``cfg``, ``depth``, ``head``...) plus the input
    shape, and must be cheap to construct: nothing is allocated until :meth:`build`.
    """

    name: str = ""
    #: Arguments that may be lists or mappings of plain values (all others are plain values).
    nested_args: tuple[str, ...] = ()

    def __init__(self, *, input_shape: InputShape) -> None:
        self.input_shape = input_shape

    @abstractmethod
    def groups(self) -> list[WidthGroup]:
        """The width groups, in a fixed order (the order of a width vector)."""

    @abstractmethod
    def build(self, widths: Mapping[str, int]) -> nn.Module:
        """A CPU fp32 module with the given widths (validated by the caller)."""

    @abstractmethod
    def arguments(self) -> dict:
        """The keyword arguments (other than the input shape) that rebuild this family."""

    def group_names(self) -> list[str]:
        return [g.name for g in self.groups()]

    def base_widths(self) -> Widths:
        return {g.name: g.base for g in self.groups()}

    def fixed_layers(self) -> dict[str, str]:
        """Producer layers kept at full width outside every group, and why (none here)."""
        return {}

    def layer_channels(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Expanded per-layer output channels: conv module name -> channels, in group order."""
        return {conv: int(widths[g.name]) for g in self.groups() for conv in g.convs}


def init_weights(model: nn.Module, *, bn_gamma: float) -> None:
    """The initialisation of the pruning papers' CIFAR code.

    Conv weights N(0, sqrt(2 / (k*k*C_out))), linear N(0, 0.01) with zero bias, BatchNorm gamma
    ``bn_gamma`` (0.5 in VGG as Network Slimming, 1 in ResNet) and beta 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.constant_(m.weight, bn_gamma)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
