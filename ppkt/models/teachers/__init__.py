"""Frozen 2D teachers and their factory.

``build_teacher(name, weights=None, layers=None)`` returns a frozen :class:`Teacher` mapping
images [B, 3, H, W] in [0, 1] to a list of feature maps [B, C_i, ceil(H/s_i), ceil(W/s_i)] with
``teacher.out_channels == [C_i]`` and ``teacher.strides == [s_i]``.

Registered teachers: ``efficientnet_lite0`` (bundled ImageNet weights), ``resnet18/34/50/101``
(torchvision or MoCo checkpoint required, :mod:`~ppkt.models.teachers.resnet`) and ``dinov2`` /
``dinov2_vit{s,b,l,g}14`` (optional ``transformers``, :mod:`~ppkt.models.teachers.dinov2`). New teachers
are added by registering a builder in :data:`TEACHERS`; callers only ever use ``build_teacher`` and the
:class:`Teacher` attributes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ppkt.errors import WeightsError
from ppkt.models.teachers.base import StackedTeacher, Teacher, load_weights, select_layers
from ppkt.models.teachers.dinov2 import DINOV2_MODEL_IDS, DINOv2, load_dinov2
from ppkt.models.teachers.efficientnet_lite import (
    EFFICIENTNET_LITE0_LAYERS,
    EfficientNetLite0,
    default_weights_path,
)
from ppkt.models.teachers.resnet import DEFAULT_LAYERS as RESNET_DEFAULT_LAYERS
from ppkt.models.teachers.resnet import (
    RESNET_ARCHS,
    ResNet,
    load_resnet_weights,
    resnet_layers,
)

__all__ = [
    "DINOV2_MODEL_IDS",
    "EFFICIENTNET_LITE0_LAYERS",
    "RESNET_ARCHS",
    "TEACHERS",
    "DINOv2",
    "EfficientNetLite0",
    "ResNet",
    "StackedTeacher",
    "Teacher",
    "build_teacher",
    "load_dinov2",
    "load_resnet_weights",
    "load_weights",
    "resnet_layers",
    "select_layers",
    "teacher_layer_choices",
]


def _efficientnet_lite0(
    weights: str | os.PathLike[str] | None = None, layers: Sequence[str] | None = None
) -> Teacher:
    """EfficientNet-Lite0 with ImageNet weights (``weights=None``: the installed package's file)."""
    model = EfficientNetLite0(layers=layers)
    load_weights(model, default_weights_path() if weights is None else weights)
    return model.freeze()


def _resnet_builder(arch: str) -> Callable[..., Teacher]:
    def build(weights: str | os.PathLike[str] | None = None, layers: Sequence[str] | None = None) -> Teacher:
        select_layers(arch, layers, list(resnet_layers(arch)), RESNET_DEFAULT_LAYERS)  # before the file
        if weights is None:
            raise WeightsError(
                f"{arch} has no bundled weights: pass teacher.weights=/path/to/{arch}.pth (a torchvision "
                f"ImageNet state dict, e.g. {arch}-*.pth) or a MoCo v2 checkpoint "
                "(e.g. moco_v2_800ep_pretrain.pth.tar); nothing is downloaded"
            )
        return ResNet(arch, layers=layers, weights=weights)

    build.__doc__ = f"{arch} with weights from a torchvision ``.pth`` or MoCo checkpoint (required)."
    return build


def _dinov2_builder(name: str) -> Callable[..., Teacher]:
    default_id, hidden = DINOV2_MODEL_IDS.get(name, (None, None))

    def build(weights: str | os.PathLike[str] | None = None, layers: Sequence[str] | None = None) -> Teacher:
        if weights is None:
            if default_id is None:
                raise WeightsError(
                    f"{name} needs weights: pass teacher.weights=/path/to/save_pretrained-folder or a "
                    f"Hugging Face model id already in the local cache (e.g. facebook/dinov2-small)"
                )
            weights = default_id
        teacher = DINOv2(load_dinov2(weights, teacher=name), layers=layers, name=name)
        if hidden is not None and teacher.hidden_size != hidden:
            raise WeightsError(
                f"{name} weights {str(weights)!r} hold a DINOv2 with hidden size {teacher.hidden_size}, "
                f"expected {hidden}; use the matching dinov2_vit*14 name or plain 'dinov2'"
            )
        return teacher

    build.__doc__ = f"{name} from a local save_pretrained folder or the local Hugging Face cache."
    return build


#: Teacher name -> builder ``(weights: path | None, layers: names | None) -> Teacher``.
#: A builder must load real weights (``weights=None`` meaning its default local file) and return a
#: frozen teacher; it must never download anything.
TEACHERS: dict[str, Callable[..., Teacher]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    **{arch: _resnet_builder(arch) for arch in RESNET_ARCHS},
    "dinov2": _dinov2_builder("dinov2"),
    **{name: _dinov2_builder(name) for name in DINOV2_MODEL_IDS},
}


def teacher_layer_choices(name: str) -> list[str] | None:
    """The layer names teacher ``name`` accepts, or ``None`` when they depend on the loaded weights
    (DINOv2: ``last`` and ``block0 … block{depth − 1}``). Checked at config load, before any weights."""
    if name == "efficientnet_lite0":
        return list(EFFICIENTNET_LITE0_LAYERS)
    if name in RESNET_ARCHS:
        return list(resnet_layers(name))
    return None


def build_teacher(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    layers: Sequence[str] | None = None,
    inputs: int = 1,
) -> Teacher:
    """Build the frozen teacher ``name`` with its weights loaded; with ``inputs > 1`` it runs on that many
    3-channel images stacked along the channels, its maps concatenated (:class:`StackedTeacher`).

    Args:
        name: a key of :data:`TEACHERS` (e.g. ``"efficientnet_lite0"``).
        weights: path of a state-dict file (ResNet: torchvision ``.pth`` or MoCo checkpoint; DINOv2: a
            ``save_pretrained`` folder or a model id in the local Hugging Face cache); ``None`` uses the
            teacher's default weights (EfficientNet-Lite0: the installed package's file; ``dinov2_vit*14``:
            the ``facebook/dinov2-*`` id from the local cache) and is an error for ResNet and ``dinov2``.
        layers: teacher-specific names of the returned feature maps (``None``: the teacher's default,
            strides 8/16/32 for EfficientNet-Lite0 and ResNet, ``last`` (stride 14) for DINOv2).

    Raises:
        ValueError: unknown ``name`` (the message lists the known names) or invalid ``layers``.
        ppkt.errors.WeightsError: the weights file is missing, corrupt or does not match the model.
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known teachers: {sorted(TEACHERS)}")
    if weights is not None:
        weights = os.path.expanduser(weights)  # like data.root; a Hugging Face model id is unchanged
    teacher = TEACHERS[name](weights=weights, layers=layers)
    return teacher if inputs == 1 else StackedTeacher(teacher, inputs)
