"""ResNet-20/32/44/56/110 for CIFAR (He et al. 2016, Sec. 4.2) with basic blocks.

Stem conv 3x3 -> 16, three stages of n = (depth - 2) / 6 basic blocks at 16/32/64 channels, the
second and third stage starting with stride 2, global average pool, linear.

Width groups:

* ``stage1``, ``stage2``, ``stage3``: the block outputs of a stage (and the stem for stage 1) form
  one group, because the shortcut additions make their channel counts equal.
* ``layerS.B``: the inner conv (``conv1``) of block B of stage S is its own group.

Shortcut ``A`` (the default, as the paper's CIFAR models) is parameter-free: it subsamples and
zero-pads the missing channels (half in front, half behind). When a pruned stage is *narrower* than
the one before, option A keeps the first channels instead. Shortcut ``B`` uses a 1x1 projection +
BatchNorm wherever the shape changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ._base import Family, InputShape, WidthGroup, init_weights

DEPTHS = (8, 20, 32, 44, 56, 110)  # 8 is the tiny test variant (one block per stage)
STAGE_WIDTHS = (16, 32, 64)


class ResNetCifar(Family):
    name = "resnet_cifar"

    def __init__(self, *, input_shape: InputShape, depth: int = 56, shortcut: str = "A",
                 bn_gamma: float = 1.0) -> None:
        super().__init__(input_shape=input_shape)
        if depth not in DEPTHS:
            raise UserError(f"unknown resnet_cifar depth {depth}; choose one of {DEPTHS}")
        if shortcut not in ("A", "B"):
            raise UserError(f"unknown shortcut {shortcut!r}; choose 'A' (zero-pad) or 'B' (1x1)")
        self.depth, self.shortcut, self.bn_gamma = int(depth), shortcut, float(bn_gamma)
        self.blocks = (self.depth - 2) // 6
        self._groups = self._make_groups()

    def arguments(self) -> dict:
        return {"depth": self.depth, "shortcut": self.shortcut, "bn_gamma": self.bn_gamma}

    def _has_projection(self, stage: int, block: int) -> bool:
        # Under option B a projection sits wherever the base shape changes (stride 2 blocks).
        return self.shortcut == "B" and block == 0 and stage > 1

    def _make_groups(self) -> list[WidthGroup]:
        groups: list[WidthGroup] = []
        n = self.blocks
        for s in (1, 2, 3):
            convs = ["conv1"] if s == 1 else []
            bns = ["bn1"] if s == 1 else []
            for b in range(n):
                convs.append(f"layer{s}.{b}.conv2")
                bns.append(f"layer{s}.{b}.bn2")
                if self._has_projection(s, b):
                    convs.append(f"layer{s}.{b}.shortcut.conv")
                    bns.append(f"layer{s}.{b}.shortcut.bn")
            # block 0 of stages 2 and 3 reads the previous stage's output
            consumers = [f"layer{s}.{b}.conv1" for b in range(0 if s == 1 else 1, n)]
            if s < 3:
                consumers.append(f"layer{s + 1}.0.conv1")
                if self._has_projection(s + 1, 0):
                    consumers.append(f"layer{s + 1}.0.shortcut.conv")
            else:
                consumers.append("fc")
            groups.append(WidthGroup(name=f"stage{s}", base=STAGE_WIDTHS[s - 1], convs=tuple(convs),
                                     bns=tuple(bns), consumers=tuple(consumers), residual=True))
        for s in (1, 2, 3):
            for b in range(n):
                groups.append(WidthGroup(name=f"layer{s}.{b}", base=STAGE_WIDTHS[s - 1],
                                         convs=(f"layer{s}.{b}.conv1",),
                                         bns=(f"layer{s}.{b}.bn1",),
                                         consumers=(f"layer{s}.{b}.conv2",)))
        return groups

    def groups(self) -> list[WidthGroup]:
        return list(self._groups)

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        stem = int(widths["stage1"])
        stages = []
        in_ch = stem
        for s in (1, 2, 3):
            out_ch = int(widths[f"stage{s}"])
            blocks = []
            for b in range(self.blocks):
                stride = 2 if (s > 1 and b == 0) else 1
                blocks.append(BasicBlock(in_ch, int(widths[f"layer{s}.{b}"]), out_ch, stride,
                                         projection=self._has_projection(s, b)))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        model = _ResNet(self.input_shape.channels, stem, stages, in_ch, self.input_shape.classes)
        init_weights(model, bn_gamma=self.bn_gamma)
        return model


class _ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad (or cut) to ``out_ch`` channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_ch > self.in_ch:
            extra = self.out_ch - self.in_ch
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        elif self.out_ch < self.in_ch:
            x = x[:, : self.out_ch]
        return x


class _Projection(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int, *,
                 projection: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if projection:
            self.shortcut: nn.Module = _Projection(in_ch, out_ch, stride)
        elif stride != 1 or in_ch != out_ch:
            self.shortcut = _ZeroPadShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, in_channels: int, stem: int, stages: list[nn.Sequential], last: int,
                 classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))
