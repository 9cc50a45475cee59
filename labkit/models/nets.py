"""Small architectures that train in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MLP", "SmallCNN", "small_net"]


class SmallCNN(nn.Module):
    """Two convolution blocks and a classifier head.

    Each block is ``conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> maxpool(2)``; the head is
    ``flatten -> linear(hidden) -> ReLU -> dropout -> linear(num_classes)``. With ``width=32``
    it has about 0.1M (8x8 inputs) to 0.6M (32x32 inputs) parameters.

    Parameters
    ----------
    in_channels, num_classes, image_size:
        Input channels, output classes and the side of the square input.
    width:
        Channels of the first block (the second has twice as many).
    hidden:
        Units in the hidden layer of the head.
    dropout:
        Dropout before the last layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width))
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """A multi-layer perceptron for tabular features."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def small_net(input_shape: Sequence[int], num_classes: int, **arch: Any) -> nn.Module:
    """The course's one model factory: a :class:`SmallCNN` for images ``(C, H, W)`` (square),
    an :class:`MLP` for feature vectors ``(D,)``; ``arch`` goes to the network's constructor.

    >>> type(small_net((3, 32, 32), 10, width=8)).__name__, type(small_net((30,), 2)).__name__
    ('SmallCNN', 'MLP')
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        return SmallCNN(shape[0], num_classes, image_size=shape[-1], **arch)
    if len(shape) == 1:
        return MLP(shape[0], num_classes, **arch)
    raise ValueError(f"input_shape must be (C, H, W) for images or (D,) for features, got {shape}")
