"""Frozen 2D teachers and their factory.

``build_teacher(name, weights=None, layers=None)`` returns a frozen :class:`Teacher` mapping
images [B, 3, H, W] in [0, 1] to a list of feature maps [B, C_i, ceil(H/s_i), ceil(W/s_i)] with
``teacher.out_channels == [C_i]`` and ``teacher.strides == [s_i]``.

New teachers (ResNet, DINOv2, ...) are added by registering a builder in :data:`TEACHERS`; callers
only ever use ``build_teacher`` and the :class:`Teacher` attributes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ppkt.models.teachers.base import Teacher, load_weights
from ppkt.models.teachers.efficientnet_lite import (
    EFFICIENTNET_LITE0_LAYERS,
    EfficientNetLite0,
    default_weights_path,
)

__all__ = [
    "EFFICIENTNET_LITE0_LAYERS",
    "TEACHERS",
    "EfficientNetLite0",
    "Teacher",
    "build_teacher",
    "load_weights",
]


def _efficientnet_lite0(
    weights: str | os.PathLike[str] | None = None, layers: Sequence[str] | None = None
) -> Teacher:
    """EfficientNet-Lite0 with ImageNet weights (``weights=None``: the installed package's file)."""
    model = EfficientNetLite0(layers=layers)
    load_weights(model, default_weights_path() if weights is None else weights)
    return model.freeze()


#: Teacher name -> builder ``(weights: path | None, layers: names | None) -> Teacher``.
#: A builder must load real weights (``weights=None`` meaning its default local file) and return a
#: frozen teacher; it must never download anything.
TEACHERS: dict[str, Callable[..., Teacher]] = {
    "efficientnet_lite0": _efficientnet_lite0,
}


def build_teacher(
    name: str, weights: str | os.PathLike[str] | None = None, layers: Sequence[str] | None = None
) -> Teacher:
    """Build the frozen teacher ``name`` with its weights loaded.

    Args:
        name: a key of :data:`TEACHERS` (e.g. ``"efficientnet_lite0"``).
        weights: path of a state-dict file; ``None`` uses the teacher's default installed weights.
        layers: teacher-specific names of the returned feature maps (``None``: the teacher's default,
            strides 8/16/32 for EfficientNet-Lite0).

    Raises:
        ValueError: unknown ``name`` (the message lists the known names) or invalid ``layers``.
        ppkt.errors.WeightsError: the weights file is missing, corrupt or does not match the model.
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known teachers: {sorted(TEACHERS)}")
    return TEACHERS[name](weights=weights, layers=layers)
