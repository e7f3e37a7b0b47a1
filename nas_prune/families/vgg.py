"""CIFAR-style VGG with BatchNorm; every conv is its own width group.

Two classifier heads from the literature:

* ``li`` (Li et al. 2017, the L1-norm paper): global 2x2 average pool, then
  linear C -> 512, BatchNorm1d, ReLU, linear 512 -> classes.
* ``slimming`` (Liu et al. 2017, Network Slimming): global average pool, then linear C -> classes.

On CIFAR the last feature map is 2x2, so the global pool equals the papers' ``AvgPool2d(2)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from torch import nn

from ..errors import UserError
from ._base import Family, InputShape, WidthGroup, init_weights

# The layer lists are data: ints are conv widths, "M" a 2x2 max pool.
CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
    # Sized for 28x28 Fashion-MNIST on a CPU: 28 -> 14 -> 7 -> 3.
    "vgg_small": [32, "M", 64, "M", 128, 128, "M", 256, 256],
    # The tiny test variant.
    "vgg_tiny": [8, "M", 16, 16],
}
HEADS = ("li", "slimming")
LI_HIDDEN = 512


class VGG(Family):
    name = "vgg"

    def __init__(self, *, input_shape: InputShape, cfg: str = "vgg16", head: str = "li",
                 bn_gamma: float = 0.5) -> None:
        super().__init__(input_shape=input_shape)
        if cfg not in CFGS:
            raise UserError(f"unknown vgg cfg {cfg!r}; choose one of {', '.join(CFGS)}")
        if head not in HEADS:
            raise UserError(f"unknown vgg head {head!r}; choose one of {', '.join(HEADS)}")
        self.cfg, self.head, self.bn_gamma = cfg, head, float(bn_gamma)
        self._groups = self._make_groups()

    def arguments(self) -> dict:
        return {"cfg": self.cfg, "head": self.head, "bn_gamma": self.bn_gamma}

    def _make_groups(self) -> list[WidthGroup]:
        widths = [w for w in CFGS[self.cfg] if w != "M"]
        names = [f"conv{i + 1}" for i in range(len(widths))]
        last_consumer = "classifier.fc1" if self.head == "li" else "classifier.fc"
        groups = []
        for i, (name, base) in enumerate(zip(names, widths, strict=True)):
            consumer = f"features.{names[i + 1]}" if i + 1 < len(names) else last_consumer
            groups.append(WidthGroup(name=name, base=int(base), convs=(f"features.{name}",),
                                     bns=(f"features.bn{i + 1}",), consumers=(consumer,)))
        return groups

    def groups(self) -> list[WidthGroup]:
        return list(self._groups)

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch, conv_i, pool_i = self.input_shape.channels, 0, 0
        for item in CFGS[self.cfg]:
            if item == "M":
                pool_i += 1
                layers[f"pool{pool_i}"] = nn.MaxPool2d(2)
                continue
            conv_i += 1
            out_ch = int(widths[f"conv{conv_i}"])
            layers[f"conv{conv_i}"] = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
            layers[f"bn{conv_i}"] = nn.BatchNorm2d(out_ch)
            layers[f"relu{conv_i}"] = nn.ReLU(inplace=True)
            in_ch = out_ch
        model = _VGGNet(nn.Sequential(layers), self._head(in_ch))
        init_weights(model, bn_gamma=self.bn_gamma)
        return model

    def _head(self, in_ch: int) -> nn.Module:
        classes = self.input_shape.classes
        if self.head == "li":
            return nn.Sequential(OrderedDict([
                ("fc1", nn.Linear(in_ch, LI_HIDDEN)),
                ("bn", nn.BatchNorm1d(LI_HIDDEN)),
                ("relu", nn.ReLU(inplace=True)),
                ("fc2", nn.Linear(LI_HIDDEN, classes)),
            ]))
        return nn.Sequential(OrderedDict([("fc", nn.Linear(in_ch, classes))]))


class _VGGNet(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)
