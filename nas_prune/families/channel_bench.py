"""The two macro networks of the Channel-Bench-Macro width benchmark (Su et al. 2021, BCNet,
arXiv 2105.10533), as families: every width allocation of the benchmark is a width vector here.

Both take 32x32 images, start with a stride-2 3x3 conv (so the body runs at 16x16, then 8x8)
and have seven width groups, in the order of the benchmark's allocation keys (digit k of a key
is the k-th group at k/4 of its base width).

``cbm_resnet`` (bases 256, 256, 256, 512, 512, 512, 512):

* ``stage1``: the stem conv and the second conv of blocks 1 and 2, whose outputs the identity
  shortcuts of blocks 1 and 2 add together;
* ``block1``, ``block2``: the first conv of blocks 1 and 2;
* ``block3``: the first conv of block 3 (stride 2); block 3 has no shortcut;
* ``stage2``: the second conv of blocks 3, 4 and 5 (identity shortcuts around blocks 4 and 5);
* ``block4``, ``block5``: the first conv of blocks 4 and 5.

A block is conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, then the shortcut addition (if any) and a
ReLU. After block 5: global average pool and a linear classifier.

``cbm_mobilenet`` (bases 128, 768, 768, 768, 256, 1536, 1024): inverted residual blocks
(1x1 expand -> BN -> ReLU -> 3x3 depthwise -> BN -> ReLU -> 1x1 project -> BN):

* ``stage1``: the stem and the projections of blocks 1 and 2 (identity shortcuts);
* ``block1``, ``block2``, ``block3``: the hidden (expanded) width of blocks 1 to 3, block 3's
  depthwise conv at stride 2 and without shortcut;
* ``stage2``: the projections of blocks 3 and 4 (identity shortcut around block 4);
* ``block4``: the hidden width of block 4;
* ``head``: a 1x1 conv -> BN -> ReLU before the pool and the classifier.

FLOPs are counted by :mod:`nas_prune.flops` (multiply-accumulates of conv and linear layers),
the convention of the benchmark's own ``flops`` field; ``benchmarks/channel_bench_check.py``
checks both counts against a results table.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import nn

from ._base import Family, InputShape, WidthGroup, init_weights

RESNET_BASES = {"stage1": 256, "block1": 256, "block2": 256, "block3": 512, "stage2": 512,
                "block4": 512, "block5": 512}
MOBILENET_BASES = {"stage1": 128, "block1": 768, "block2": 768, "block3": 768, "stage2": 256,
                   "block4": 1536, "head": 1024}


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1
             ) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return (nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout))


class _Stem(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(cin, cout, 3, stride=2)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _ResBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus ``x`` when ``shortcut``, then ReLU."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, mid, 3, stride)
        self.conv2, self.bn2 = _conv_bn(mid, cout, 3)
        self.shortcut = shortcut

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + x if self.shortcut else out)


class _InvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU -> depthwise 3x3 -> BN -> ReLU -> 1x1 project -> BN (+ x)."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.expand, self.bn1 = _conv_bn(cin, hidden, 1)
        self.dw, self.bn2 = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project, self.bn3 = _conv_bn(hidden, cout, 1)
        self.shortcut = shortcut

    def forward(self, x):
        out = F.relu(self.bn1(self.expand(x)))
        out = self.bn3(self.project(F.relu(self.bn2(self.dw(out)))))
        return out + x if self.shortcut else out


class _Head(nn.Module):
    def __init__(self, features: nn.Module, last: int, classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class _ChannelBench(Family):
    """What both macro networks share: the BatchNorm gamma they are initialised with."""

    def __init__(self, *, input_shape: InputShape, bn_gamma: float = 1.0) -> None:
        super().__init__(input_shape=input_shape)
        self.bn_gamma = float(bn_gamma)

    def arguments(self) -> dict:
        return {"bn_gamma": self.bn_gamma}


class ChannelBenchResNet(_ChannelBench):
    name = "cbm_resnet"

    def groups(self) -> list[WidthGroup]:
        b = RESNET_BASES
        p = "features."

        def inner(k: int) -> WidthGroup:
            return WidthGroup(name=f"block{k}", base=b[f"block{k}"],
                              convs=(f"{p}block{k}.conv1",), bns=(f"{p}block{k}.bn1",),
                              consumers=(f"{p}block{k}.conv2",))

        return [
            WidthGroup(name="stage1", base=b["stage1"],
                       convs=(f"{p}stem.conv", f"{p}block1.conv2", f"{p}block2.conv2"),
                       bns=(f"{p}stem.bn", f"{p}block1.bn2", f"{p}block2.bn2"),
                       consumers=(f"{p}block1.conv1", f"{p}block2.conv1", f"{p}block3.conv1"),
                       residual=True),
            inner(1), inner(2), inner(3),
            WidthGroup(name="stage2", base=b["stage2"],
                       convs=(f"{p}block3.conv2", f"{p}block4.conv2", f"{p}block5.conv2"),
                       bns=(f"{p}block3.bn2", f"{p}block4.bn2", f"{p}block5.bn2"),
                       consumers=(f"{p}block4.conv1", f"{p}block5.conv1", "fc"),
                       residual=True),
            inner(4), inner(5),
        ]

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        w = {g: int(widths[g]) for g in RESNET_BASES}
        s1, s2 = w["stage1"], w["stage2"]
        body = nn.Sequential()
        body.add_module("stem", _Stem(self.input_shape.channels, s1))
        body.add_module("block1", _ResBlock(s1, w["block1"], s1, 1, shortcut=True))
        body.add_module("block2", _ResBlock(s1, w["block2"], s1, 1, shortcut=True))
        body.add_module("block3", _ResBlock(s1, w["block3"], s2, 2, shortcut=False))
        body.add_module("block4", _ResBlock(s2, w["block4"], s2, 1, shortcut=True))
        body.add_module("block5", _ResBlock(s2, w["block5"], s2, 1, shortcut=True))
        model = _Head(body, s2, self.input_shape.classes)
        init_weights(model, bn_gamma=self.bn_gamma)
        return model


class ChannelBenchMobileNet(_ChannelBench):
    name = "cbm_mobilenet"

    def groups(self) -> list[WidthGroup]:
        b = MOBILENET_BASES
        p = "features."

        def hidden(k: int, consumer: str) -> WidthGroup:
            return WidthGroup(name=f"block{k}", base=b[f"block{k}"],
                              convs=(f"{p}block{k}.expand", f"{p}block{k}.dw"),
                              bns=(f"{p}block{k}.bn1", f"{p}block{k}.bn2"),
                              consumers=(consumer,), depthwise=(f"{p}block{k}.dw",))

        return [
            WidthGroup(name="stage1", base=b["stage1"],
                       convs=(f"{p}stem.conv", f"{p}block1.project", f"{p}block2.project"),
                       bns=(f"{p}stem.bn", f"{p}block1.bn3", f"{p}block2.bn3"),
                       consumers=(f"{p}block1.expand", f"{p}block2.expand",
                                  f"{p}block3.expand"),
                       residual=True),
            hidden(1, f"{p}block1.project"), hidden(2, f"{p}block2.project"),
            hidden(3, f"{p}block3.project"),
            WidthGroup(name="stage2", base=b["stage2"],
                       convs=(f"{p}block3.project", f"{p}block4.project"),
                       bns=(f"{p}block3.bn3", f"{p}block4.bn3"),
                       consumers=(f"{p}block4.expand", f"{p}head.conv"), residual=True),
            hidden(4, f"{p}block4.project"),
            WidthGroup(name="head", base=b["head"], convs=(f"{p}head.conv",),
                       bns=(f"{p}head.bn",), consumers=("fc",)),
        ]

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        w = {g: int(widths[g]) for g in MOBILENET_BASES}
        s1, s2 = w["stage1"], w["stage2"]
        body = nn.Sequential()
        body.add_module("stem", _Stem(self.input_shape.channels, s1))
        body.add_module("block1", _InvertedResidual(s1, w["block1"], s1, 1, shortcut=True))
        body.add_module("block2", _InvertedResidual(s1, w["block2"], s1, 1, shortcut=True))
        body.add_module("block3", _InvertedResidual(s1, w["block3"], s2, 2, shortcut=False))
        body.add_module("block4", _InvertedResidual(s2, w["block4"], s2, 1, shortcut=True))
        body.add_module("head", _HeadConv(s2, w["head"]))
        model = _Head(body, w["head"], self.input_shape.classes)
        init_weights(model, bn_gamma=self.bn_gamma)
        return model


class _HeadConv(nn.Module):
    """1x1 conv -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(cin, cout, 1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))
