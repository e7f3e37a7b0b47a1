"""Small-input variants of torchvision models, for the graph family (``model: zoo:NAME``).

ImageNet models shrink a 224-pixel image 32-fold; on 28-64 pixel data (CIFAR, Fashion-MNIST) the
usual change, as in the CIFAR code of the pruning papers, keeps the resolution early on:

* :func:`resnet_small`: torchvision's ``BasicBlock`` / ``Bottleneck`` stages with a 3x3 stride-1
  stem conv and no max-pool (stages at 32, 16, 8, 4 pixels for 32-pixel input); ``width`` is the
  first stage's channels (64 as torchvision; smaller for tests).
* :func:`mobilenet_v2_small`: torchvision's ``MobileNetV2`` with a stride-1 stem and the second
  stage at stride 1 (``setting="cifar"``, the common CIFAR variant), or the three-stage ``tiny``
  setting for tests; ``last_channel`` sets the final 1x1 conv (1280 in torchvision).

Module names follow torchvision's (``conv1``, ``layer1.0.conv1``, ``features.3.conv.1.0``...), so
group names read the same as for the ImageNet models. The graph family traces these like any
other model; the input channels and classes are adapted to the data by the family.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
from torchvision.ops.misc import Conv2dNormActivation

RESNETS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "resnet10": (BasicBlock, (1, 1, 1, 1)),  # the tiny test variant
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
MOBILENET_SETTINGS = {
    # t (expansion), c (channels), n (blocks), s (stride of the first block)
    "cifar": [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
              [6, 160, 3, 2], [6, 320, 1, 1]],
    "tiny": [[1, 8, 1, 1], [2, 8, 2, 2], [2, 16, 1, 2]],
}


class SmallResNet(nn.Module):
    """torchvision's ResNet with a 3x3 stride-1 stem and no max-pool."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], *, width: int,
                 num_classes: int) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_small(*, arch: str = "resnet18", width: int = 64, num_classes: int = 10) -> nn.Module:
    """A ResNet for 28-64 pixel images (see the module docstring)."""
    if arch not in RESNETS:
        raise ValueError(f"arch {arch!r}: choose one of {', '.join(RESNETS)}")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 4096:
        raise ValueError(f"width {width!r}: must be an integer in [1, 4096]")
    block, layers = RESNETS[arch]
    return SmallResNet(block, layers, width=width, num_classes=num_classes)


def mobilenet_v2_small(*, setting: str = "cifar", width_mult: float = 1.0,
                       last_channel: int = 1280, num_classes: int = 10) -> nn.Module:
    """A MobileNetV2 for 28-64 pixel images (see the module docstring)."""
    if setting not in MOBILENET_SETTINGS:
        raise ValueError(f"setting {setting!r}: choose one of {', '.join(MOBILENET_SETTINGS)}")
    net = MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                      inverted_residual_setting=[list(r) for r in MOBILENET_SETTINGS[setting]])
    net.features[0][0].stride = (1, 1)
    if last_channel != net.last_channel:
        last = net.features[-1]
        in_ch = last[0].in_channels
        net.features[-1] = Conv2dNormActivation(in_ch, last_channel, kernel_size=1,
                                                norm_layer=nn.BatchNorm2d,
                                                activation_layer=nn.ReLU6)
        nn.init.kaiming_normal_(net.features[-1][0].weight, mode="fan_out")
        net.classifier[1] = nn.Linear(last_channel, num_classes)
        nn.init.normal_(net.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(net.classifier[1].bias)
        net.last_channel = last_channel
    return net


__all__ = ["mobilenet_v2_small", "resnet_small"]
