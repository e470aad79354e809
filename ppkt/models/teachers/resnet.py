"""ResNet-18/34/50/101 as frozen multi-scale teachers (torchvision ImageNet or MoCo weights).

Our own definition of torchvision's ResNet ("v1.5": in a Bottleneck the stride sits on the 3x3 conv),
with parameter names identical to torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer2.0.downsample.0``, ``fc``) so a torchvision ``resnet50-*.pth`` state dict loads with strict
key and shape checking::

    images [B, 3, H, W] in [0, 1]  ->  (x - ImageNet mean) / ImageNet std
    stem    conv1 7x7 s2 -> bn1 -> ReLU                       [B,   64, H/2,  W/2 ]
            maxpool 3x3 s2
    layer1  blocks at stride 1                                [B,  64e, H/4,  W/4 ]
    layer2  first block stride 2                              [B, 128e, H/8,  W/8 ]
    layer3  first block stride 2                              [B, 256e, H/16, W/16]
    layer4  first block stride 2                              [B, 512e, H/32, W/32]
    classifier (``classify`` only): global average pool -> fc [B, 1000]

``e`` is 1 for BasicBlock networks (18/34) and 4 for Bottleneck networks (50/101). Every "H/s" is
``ceil(H / s)``: all convolutions and the max-pool use symmetric padding ``(k - 1) / 2``, which gives
``ceil`` for any H, W (odd sizes included) exactly as torchvision does. BatchNorm eps is 1e-5.

``stem`` is the stride-2 map *before* the max-pool (the max-pool output would duplicate ``layer1``'s
stride 4 with fewer channels). The default layers are ``layer2, layer3, layer4`` (strides 8/16/32),
the same strides as the other teachers' defaults; ``layer1`` (stride 4) and ``stem`` (stride 2) can be
requested for finer maps. ``fc`` never runs in :meth:`ResNet.extract`.

Weights (:func:`load_resnet_weights`) are detected and unwrapped automatically:

* a torchvision state dict (``{"conv1.weight": ..., "fc.bias": ...}``; files saved before PyTorch 0.4.1
  without ``*.num_batches_tracked`` are accepted), optionally under ``"state_dict"`` or ``"model"``
  and/or with a ``module.`` (DataParallel) prefix;
* a MoCo v1/v2 checkpoint (``{"state_dict": {"module.encoder_q.conv1.weight": ...}}``, with or without
  ``module.``): only the query encoder is kept; ``encoder_k``, ``queue``/``queue_ptr`` and the
  projection head ``fc.*`` are dropped;
* a MoCo v3 checkpoint (``module.base_encoder.*``): ``momentum_encoder``, ``predictor`` and ``fc.*``
  are dropped.

A file without ``fc.*`` (self-supervised backbones) loads; :meth:`ResNet.classify` then refuses to run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.models.state import check_state_dict
from ppkt.models.teachers.base import Teacher, select_layers

__all__ = [
    "DEFAULT_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESNET_ARCHS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "load_resnet_weights",
    "read_resnet_state_dict",
    "resnet_layers",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000
DEFAULT_LAYERS: tuple[str, ...] = ("layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first) + skip: [B, cin, H, W] -> [B, planes, H/s, W/s]."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + skip)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, torchvision v1.5) -> 1x1 (x4 channels) + skip: -> [B, 4*planes, H/s, W/s]."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + skip)


#: Architecture name -> (block type, blocks per stage), as in torchvision.
RESNET_ARCHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def resnet_layers(arch: str) -> dict[str, tuple[int, int]]:
    """Selectable feature maps of ``arch``: name -> (channels, stride), in network order."""
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown ResNet architecture {arch!r}; known: {list(RESNET_ARCHS)}")
    e = RESNET_ARCHS[arch][0].expansion
    return {
        "stem": (64, 2),
        "layer1": (64 * e, 4),
        "layer2": (128 * e, 8),
        "layer3": (256 * e, 16),
        "layer4": (512 * e, 32),
    }


class ResNet(Teacher):
    """Frozen torchvision-compatible ResNet returning the feature maps named in ``layers``.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        layers: names from :func:`resnet_layers` (``stem``, ``layer1`` .. ``layer4``); default
            ``("layer2", "layer3", "layer4")`` = strides 8/16/32 (channels 128/256/512 for 18/34,
            512/1024/2048 for 50/101).
        weights: a checkpoint to load with :func:`load_resnet_weights`, or ``None`` to keep the random
            initialisation (callers normally use ``build_teacher``, which requires weights).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        arch: str = "resnet50",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        table = resnet_layers(arch)
        self.name = arch
        self.arch = arch
        self.layers = select_layers(arch, layers, list(table), DEFAULT_LAYERS)
        self.out_channels = [table[n][0] for n in self.layers]
        self.strides = [table[n][1] for n in self.layers]
        #: False after loading a checkpoint without ``fc.*`` (e.g. MoCo): :meth:`classify` refuses.
        self.has_classifier = True

        block, counts = RESNET_ARCHS[arch]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        stages: list[nn.Sequential] = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, NUM_CLASSES)
        for m in self.modules():  # torchvision's initialisation (only matters without weights)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if weights is not None:
            load_resnet_weights(self, weights)
        self.freeze()

    def _run(self, images: Tensor, wanted: Sequence[str]) -> dict[str, Tensor]:
        """Run the network as far as the deepest name in ``wanted``; returns name -> map."""
        order = ["stem", "layer1", "layer2", "layer3", "layer4"]
        last = max(order.index(n) for n in wanted)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        out: dict[str, Tensor] = {"stem": x}
        x = self.maxpool(x)
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            if i > last:
                break
            x = stage(x)
            out[f"layer{i}"] = x
        return out

    def extract(self, images: Tensor) -> list[Tensor]:
        """Feature maps ``[B, out_channels[i], ceil(H/strides[i]), ceil(W/strides[i])]``."""
        maps = self._run(images, self.layers)
        return [maps[n] for n in self.layers]

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet-1k logits [B, 1000] for ``images`` [B, 3, H, W] in [0, 1] (no grad)."""
        if not self.has_classifier:
            raise WeightsError(
                f"{self.name}: the loaded weights have no ImageNet classifier (fc), e.g. a MoCo backbone"
            )
        self.check_images(images)
        with torch.no_grad():
            x = self._run(images, ["layer4"])["layer4"]
            return self.fc(x.mean(dim=(2, 3)))


# ----------------------------------------------------------------------------------------------------
# Weights

_MOCO_ENCODERS: dict[str, tuple[str, ...]] = {
    # query/online encoder prefix -> other top-level entries of the checkpoint to drop
    "encoder_q.": ("encoder_k.", "queue", "queue_ptr"),  # MoCo v1/v2
    "base_encoder.": ("momentum_encoder.", "predictor."),  # MoCo v3
}


def read_resnet_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    """Read a ResNet checkpoint in any supported format; returns (backbone state dict, format description).

    The returned keys are torchvision's (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...); a MoCo
    projection head is dropped, a torchvision ``fc`` is kept. Raises :class:`WeightsError` naming ``path``
    when it is missing, unreadable/corrupt or does not hold a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle error, truncated file, non-weights pickle, ...
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    fmt = "state dict"
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj, fmt = obj[key], f"state dict under {key!r}"
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    state: dict[str, Tensor] = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        fmt += " with prefix 'module.'"
    for prefix, others in _MOCO_ENCODERS.items():
        if any(k.startswith(prefix) for k in state):
            version = "v1/v2" if prefix == "encoder_q." else "v3"
            rest = [k for k in state if not k.startswith(prefix) and not k.startswith(others)]
            if rest:
                raise WeightsError(
                    f"weights file {path} looks like a MoCo {version} checkpoint ({prefix}*) but also holds "
                    f"{len(rest)} other entries {rest[:5]}"
                )
            state = {
                k[len(prefix) :]: v
                for k, v in state.items()
                if k.startswith(prefix) and not k[len(prefix) :].startswith("fc.")
            }
            fmt = f"MoCo {version} checkpoint ({fmt}; kept {prefix}*, dropped the projection head fc.*)"
            break
    return state, fmt


def _guess_arch(state: Mapping[str, Tensor]) -> str | None:
    """Name of the ResNet whose block layout matches ``state``'s keys, if any."""
    counts = [0, 0, 0, 0]
    for k in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", k)
        if m:
            i = int(m.group(1)) - 1
            counts[i] = max(counts[i], int(m.group(2)) + 1)
    bottleneck = any(re.match(r"layer[1-4]\.\d+\.conv3\.", k) for k in state)
    for name, (block, blocks) in RESNET_ARCHS.items():
        if tuple(counts) == blocks and (block is Bottleneck) == bottleneck:
            return name
    return None


def load_resnet_weights(model: ResNet, path: str | os.PathLike[str]) -> ResNet:
    """Load a torchvision/MoCo checkpoint (see :func:`read_resnet_state_dict`) into ``model``, strictly.

    Every backbone tensor must be present with the right shape (``*.num_batches_tracked`` may be absent,
    as in pre-0.4.1 torchvision files); ``fc.weight``/``fc.bias`` must be both present (ImageNet
    classifier) or both absent (``model.has_classifier`` becomes False). Raises :class:`WeightsError`
    naming ``path``, its detected format and the missing/unexpected keys or wrong shapes.
    """
    state, fmt = read_resnet_state_dict(path)
    expected = model.state_dict()
    for k, v in expected.items():  # pre-0.4.1 files: fill the counter of BatchNorms the file does hold
        bn = k[: -len("num_batches_tracked")]
        if k.endswith("num_batches_tracked") and k not in state and f"{bn}running_mean" in state:
            state[k] = v.clone()
    fc_keys = {"fc.weight", "fc.bias"}
    has_fc = bool(fc_keys & set(state))
    guess = _guess_arch(state)
    check_state_dict(
        state,
        expected,
        what=f"weights file {path} ({fmt})",
        target=model.arch,
        optional=None if has_fc else fc_keys.__contains__,
        hint=f"; the file looks like a {guess}" if guess and guess != model.arch else "",
        show=8,
    )
    model.load_state_dict(state, strict=has_fc)
    model.has_classifier = has_fc
    return model
