"""The frozen 2D "teacher" interface and a strict, error-checked weights loader.

A teacher maps images to multi-scale feature maps::

    images  [B, 3, H, W]  float in [0, 1] (RGB; each teacher normalises internally)
    ->  [ [B, out_channels[i], ceil(H / strides[i]), ceil(W / strides[i])]  for each requested layer i ]

Teachers are frozen: parameters never require grad, the module is always in eval mode (``train(True)``
is a no-op, so BatchNorm statistics never change) and ``forward`` runs under :func:`torch.no_grad`.
``no_grad`` rather than ``inference_mode`` is deliberate: the returned features are ordinary tensors
that a learnable head (the UPL) may save for its own backward pass. Calling a teacher inside an outer
``torch.inference_mode()`` block also works (the outputs are then inference tensors).

Concrete teachers implement :meth:`Teacher.extract` (the raw computation) and set ``layers``,
``out_channels`` and ``strides``; see :mod:`ppkt.models.teachers.efficientnet_lite`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.models.state import check_state_dict

__all__ = ["StackedTeacher", "Teacher", "load_weights", "select_layers"]


class Teacher(nn.Module, abc.ABC):
    """Base class of frozen multi-scale image feature extractors.

    Attributes:
        name: registry name of the teacher (e.g. ``"efficientnet_lite0"``).
        layers: names of the returned feature maps, in output order.
        out_channels: channels of each returned map (same order as ``layers``).
        strides: downsampling factor of each returned map w.r.t. the input image.
    """

    name: str = "teacher"

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[str] = []
        self.out_channels: list[int] = []
        self.strides: list[int] = []

    @abc.abstractmethod
    def extract(self, images: Tensor) -> list[Tensor]:
        """Compute the feature maps of ``images`` [B, 3, H, W] in [0, 1] (no grad handling here)."""

    def freeze(self) -> Teacher:
        """Make every parameter non-trainable and switch to eval mode; returns ``self``."""
        self.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> Teacher:
        """Teachers are frozen: always stay in eval mode whatever ``mode`` says."""
        return super().train(False)

    def check_images(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is a floating [B, 3, H, W] tensor."""
        if not isinstance(images, Tensor):
            raise TypeError(f"{self.name}: images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must have shape [B, 3, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"{self.name}: images must be floating point in [0, 1], got {images.dtype}")

    def forward(self, images: Tensor) -> list[Tensor]:
        """Frozen multi-scale features: ``[B, out_channels[i], ceil(H/strides[i]), ceil(W/strides[i])]``."""
        self.check_images(images)
        with torch.no_grad():
            return self.extract(images)


class StackedTeacher(Teacher):
    """One frozen teacher run on ``parts`` images stacked along the channels (``[B, 3·parts, H, W]``, e.g.
    an RGB image and an HHA depth encoding: :mod:`ppkt.data.teacher_input`); each layer's maps of the parts
    are concatenated along the channels, so ``out_channels`` are ``parts`` times the base teacher's and the
    strides are its strides."""

    def __init__(self, base: Teacher, parts: int) -> None:
        super().__init__()
        if parts < 2:
            raise ValueError(f"StackedTeacher: parts must be >= 2, got {parts}")
        self.base, self.parts = base, parts
        self.name = base.name
        self.layers = list(base.layers)
        self.out_channels = [parts * c for c in base.out_channels]
        self.strides = list(base.strides)
        self.freeze()

    def check_images(self, images: Tensor) -> None:
        if isinstance(images, Tensor) and images.dim() == 4 and images.shape[1] != 3 * self.parts:
            raise ValueError(
                f"{self.name}: images must have shape [B, {3 * self.parts}, H, W] ({self.parts} stacked "
                f"3-channel images), got {tuple(images.shape)}"
            )
        for part in images.split(3, dim=1) if isinstance(images, Tensor) and images.dim() == 4 else [images]:
            self.base.check_images(part)

    def extract(self, images: Tensor) -> list[Tensor]:
        maps = [self.base.extract(part) for part in images.split(3, dim=1)]
        return [torch.cat(level, dim=1) for level in zip(*maps, strict=True)]


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a ``state_dict`` file into ``model`` with strict key and shape checking.

    Nothing is downloaded. Raises :class:`ppkt.errors.WeightsError` naming ``path`` when the file is
    missing, unreadable/corrupt, not a state dict, has non-finite values, or its keys/shapes do not
    match ``model``.
    Accepts a bare state dict or a checkpoint dict holding one under ``"state_dict"``/``"model"``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle error, truncated file, ...
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    state = dict(obj)
    check_state_dict(state, model.state_dict(), what=f"weights file {path}", target=type(model).__name__)
    model.load_state_dict(state, strict=True)
    return model


def select_layers(
    teacher: str, layers: Sequence[str] | None, choices: Sequence[str], default: Sequence[str]
) -> list[str]:
    """Validate requested layer names (``None`` -> ``default``); ``ValueError`` lists ``choices``."""
    if isinstance(layers, str):
        raise ValueError(f"{teacher}: layers must be a list of names, got the string {layers!r}")
    out = list(default if layers is None else layers)
    if not out:
        raise ValueError(f"{teacher}: layers is empty; choose from {list(choices)}")
    unknown = [n for n in out if n not in choices]
    if unknown or len(set(out)) != len(out):
        raise ValueError(
            f"{teacher}: invalid layers {out} (unknown {unknown} or duplicates); choose from {list(choices)}"
        )
    return out
