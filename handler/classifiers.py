"""Victim / shadow classifier architectures, written here so that no torchvision is needed.

Every classifier takes images in model space (N, C, H, W) and returns logits (N, K).
`build_classifier(arch, ...)` is the registry used by the archiver and by the handler.
"""
from typing import Callable, Dict

import torch
from torch import nn


class Conv3(nn.Module):
    """The `conv3` CNN of the SAME release (mult=2), sized for 1x28x28 (works for any 28x28 / 32x32 input).

    Conv(C->32,3)-ReLU-MaxPool2-Conv(32->64,3)-ReLU-Conv(64->128,3)-ReLU-MaxPool2-FC-ReLU-FC(512->K).
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, img_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((img_size - 2) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool), for 3x32x32 inputs; any channel count works."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, img_size: int = 32, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True))
        layers, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2 ** i
            layers += [_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


CLASSIFIERS: Dict[str, Callable[..., nn.Module]] = {
    "conv3": Conv3,
    "resnet18": ResNet18Cifar,
}


def build_classifier(arch: str, in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Instantiate a built-in classifier by name (see CLASSIFIERS)."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier architecture {arch!r}; choose one of {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[arch](in_chans=in_chans, num_classes=num_classes, img_size=img_size)
