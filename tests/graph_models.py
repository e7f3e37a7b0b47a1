"""User factories for the graph-family tests (``model: tests.graph_models:NAME``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The head conv's kernel size; a test changes it to check that a changed model is refused.
HEAD_KERNEL = 1


class TinyNet(nn.Module):
    """A stem, a residual block with a depthwise conv, a squeeze-and-excitation product, a head
    conv without BatchNorm, ``x.mean([2, 3])`` pooling and a linear classifier."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, 2 * width, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(2 * width)
        self.dw = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width, bias=False)
        self.dw_bn = nn.BatchNorm2d(2 * width)
        self.se_reduce = nn.Conv2d(2 * width, 4, 1)
        self.se_expand = nn.Conv2d(4, 2 * width, 1)
        self.project = nn.Conv2d(2 * width, width, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 3 * width, HEAD_KERNEL, padding=HEAD_KERNEL // 2)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(3 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu6(self.expand_bn(self.expand(x)))
        y = F.relu6(self.dw_bn(self.dw(y)))
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        y = self.project_bn(self.project(y * s))
        x = F.max_pool2d(x + y, 2)
        x = F.relu(self.head(x))
        return self.fc(self.drop(x.mean([2, 3])))


def tiny_net(width: int = 8, num_classes: int = 10) -> nn.Module:
    return TinyNet(width, num_classes)


class _Flatten(nn.Module):
    """Flattens a 4x4 map straight into the classifier: channels mixed with space."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 4)
        return self.fc(x.view(x.size(0), -1))


def flatten_net() -> nn.Module:
    return _Flatten()


class _GroupNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean([2, 3]))


def groupnorm_net() -> nn.Module:
    return _GroupNorm()


class _Branches(nn.Module):
    """Two branches concatenated (their widths stay fixed), one grouped conv (fixed), and an
    inner conv that can be searched."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.inner = nn.Conv2d(12, 16, 3, padding=1)
        self.inner_bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.mid = nn.Conv2d(16, 8, 1)
        self.mid_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        x = F.relu(self.inner_bn(self.inner(x)))
        x = F.relu(self.mid_bn(self.mid(self.grouped(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def branch_net() -> nn.Module:
    return _Branches()


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.fc(x.mean([2, 3]))


def untraceable_net() -> nn.Module:
    return _Untraceable()
