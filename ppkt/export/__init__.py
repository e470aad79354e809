"""Portable weights: ppkt students in other frameworks' checkpoint formats, and back.

* :func:`export_weights`: a ppkt student's state dict (+ optional linear head) -> the checkpoint dict of a
  target (:data:`~ppkt.export.targets.TARGETS`: ``pointcept`` = Pointcept's ``SpUNet-v1m1``,
  ``minkunet34c`` = MinkowskiEngine's ``MinkUNet34C`` / SLidR's ``Res16UNet34C``, ``mmdet3d`` = mmdet3d's
  ``MinkUNetBackbone`` on spconv), refusing a student whose architecture is not the target's
  (:class:`~ppkt.errors.WeightsError`).
* :func:`import_student_weights`: such a checkpoint file -> the state dict of a ppkt student
  (``ppkt finetune --init FILE``); ``None`` for a ppkt checkpoint. :func:`import_classifier`: its classifier
  as a ppkt linear head (``ppkt evaluate --ckpt FILE``).
* :mod:`ppkt.export.layouts`: the kernel layouts (spconv 1/2, MinkowskiEngine, TorchSparse) and their exact
  conversions; :mod:`ppkt.export.onnx`: the student's forward as an ONNX graph.

Layer: above :mod:`ppkt.models` (it builds students), below :mod:`ppkt.training` (``--init`` uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ppkt.errors import WeightsError
from ppkt.export.targets import OPENPCDET_REFUSAL, TARGETS, Target, get_target
from ppkt.models.student import SparseUNet, build_student

#: the file formats :func:`detect_format` recognises, besides ppkt's own
FORMATS = ("pointcept", "minkunet34c", "mmdet3d")

#: ``(key suffix that identifies the format, target)``, tried in this order
_ANCHORS = (
    ("encoder.0.0.0.weight", "mmdet3d"),
    ("conv_input.0.weight", "pointcept"),
    ("conv0p1s1.kernel", "minkunet34c"),
)


@dataclass
class ForeignWeights:
    """A foreign checkpoint: its ``target`` and the state dict without prefixes, the classifier (or
    projection) as ``final.*``; ``projection``: the file says its ``final`` is a pretraining projection
    (SLidR's pretraining checkpoints: ``model_images`` beside ``model_points``, or
    ``config.normalize_features``), not a classifier."""

    target: Target
    state: dict[str, Tensor]
    projection: bool = False

    @property
    def backbone(self) -> dict[str, Tensor]:
        """The state without the classifier / projection ``final.*``."""
        return {k: v for k, v in self.state.items() if not k.startswith("final.")}

    @property
    def num_outputs(self) -> int | None:
        """Outputs of ``final`` (its bias length), ``None`` without one."""
        bias = self.state.get("final.bias")
        return None if bias is None else int(bias.numel())


def export_weights(
    student: SparseUNet,
    state: Mapping[str, Tensor],
    target: str,
    head: Mapping[str, Tensor] | None = None,
    what: str = "the student",
    classifier: bool = False,
) -> dict[str, Any]:
    """The checkpoint dict of ``target`` holding ``state`` (the state dict of ``student``'s architecture)
    and, when given, ``head`` (an ``nn.Linear`` ``{"weight", "bias"}`` on the student's output: the
    target's ``final`` layer). ``classifier``: ``head`` predicts class ids ``1..N`` (a fine-tuning run's
    head), so the target's :attr:`~ppkt.export.targets.Target.ignored_outputs` (SLidR: label 0) are put
    before its outputs, with zero weights."""
    t = get_target(target)
    t.check_arch(student.arch, what)
    if head is not None and student.head is not None:
        raise WeightsError(f"{what} has its own head: export it without a second one")
    if head is not None and classifier and t.ignored_outputs:
        k = t.ignored_outputs
        w, b = head["weight"], head["bias"]
        head = {"weight": torch.cat([w.new_zeros(k, w.shape[1]), w]), "bias": torch.cat([b.new_zeros(k), b])}
    theirs = t.export_state({**state, **{f"linear.{k}": v for k, v in (head or {}).items()}})
    return t.wrap(theirs)


def detect_format(obj: Any) -> ForeignWeights | None:
    """The foreign weights in a loaded checkpoint ``obj``, ``None`` when it is not one (a ppkt checkpoint,
    or something else for the caller to report). OpenPCDet files are refused with a ``WeightsError``."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("model_state"), dict):
        raise WeightsError(f"an OpenPCDet checkpoint (model_state): {OPENPCDET_REFUSAL}")
    candidates: list[tuple[str, dict[str, Any]]] = []
    for container in ("state_dict", "model_points", "model"):
        if isinstance(obj.get(container), dict):
            candidates.append((container, obj[container]))
    candidates.append(("", obj))
    config = obj.get("config")
    projection = "model_images" in obj or (
        isinstance(config, dict) and config.get("normalize_features") is True
    )
    for _, sd in candidates:
        if any(isinstance(k, str) and k.startswith("student.") for k in sd):
            return None  # ppkt's own checkpoint
        for anchor, name in _ANCHORS:
            keys = [k for k in sd if isinstance(k, str) and k.endswith(anchor)]
            if not keys:
                continue
            target = TARGETS[name]
            prefix = min(keys, key=len)[: -len(anchor)]
            state = {
                k[len(prefix) :]: v
                for k, v in sd.items()
                if isinstance(k, str) and k.startswith(prefix) and isinstance(v, Tensor)
            }
            if target.head_prefix is not None:  # the classifier sits beside the backbone (mmdet3d)
                root = prefix[: -len(target.prefix)] if prefix.endswith(target.prefix) else ""
                for part in ("weight", "bias"):
                    v = sd.get(f"{root}{target.head_prefix}{part}")
                    if isinstance(v, Tensor):
                        state[f"final.{part}"] = v
            return ForeignWeights(target, state, projection)
    return None


def read_weights_file(path: str | Path) -> Any:
    """``torch.load`` of ``path`` (tensors and plain data only, memory-mapped when possible)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        pass  # a legacy (non-zip) file cannot be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def import_student_weights(path: str | Path, student: SparseUNet, name: str = "") -> dict[str, Tensor] | None:
    """``student``'s state dict read from the Pointcept / MinkUNet34C checkpoint ``path`` (layouts
    converted), or ``None`` when ``path`` is not such a file (a ppkt checkpoint: read it as before).
    ``WeightsError`` when the file's network is not ``student``'s architecture (``name``: its preset)."""
    foreign = detect_format(read_weights_file(path))
    if foreign is None:
        return None
    return student_state(foreign, student, name, what=f"{path} ({foreign.target.network} weights)")


def student_state(foreign: ForeignWeights, student: SparseUNet, name: str, what: str) -> dict[str, Tensor]:
    """``student``'s state dict from the backbone of ``foreign`` (layouts converted); ``WeightsError``
    naming ``what`` and ``student.name`` when the file's network is not ``student``'s architecture, with
    the target's preset that the file fits when there is one."""
    t = foreign.target
    label = f"student.name={name!r}" if name else "the student"
    try:
        t.check_arch(student.arch, label)
        return t.import_state(foreign.backbone, student.state_dict(), what=what, target=label)
    except WeightsError as e:
        fits = _fitting_preset(foreign, student.in_channels)
        if fits is None or fits == name:
            raise
        raise WeightsError(f"{e}; the file fits student.name={fits}") from e


def _fitting_preset(foreign: ForeignWeights, in_channels: int) -> str | None:
    """The first preset of ``foreign``'s target whose exported keys and shapes are the file's backbone."""
    want = {k: tuple(v.shape) for k, v in foreign.backbone.items()}
    for preset in foreign.target.presets:
        state = build_student(preset, in_channels).state_dict()
        got = {k: tuple(v.shape) for k, v in foreign.target.export_state(state).items()}
        if got == want:
            return preset
    return None


def import_classifier(foreign: ForeignWeights, in_dim: int, what: str) -> dict[str, Tensor] | None:
    """The classifier ``final`` of ``foreign`` as a ppkt linear head ``{"weight" [N, in_dim], "bias" [N]}``
    for class ids ``1..N`` (the target's ignored outputs dropped), ``None`` when the file has no ``final``.
    ``WeightsError`` naming ``what`` when its shapes do not fit a linear map from ``in_dim`` features."""
    n = foreign.num_outputs
    if n is None:
        return None
    t = foreign.target
    expected = {"linear.weight": torch.zeros(n, in_dim), "linear.bias": torch.zeros(n)}
    theirs = {k: v for k, v in foreign.state.items() if k.startswith("final.")}
    head = t.import_state(theirs, expected, what=what, target=f"a linear classifier on {in_dim} features")
    k = t.ignored_outputs
    if n <= k:
        raise WeightsError(f"{what}: its final layer has {n} outputs, none beyond the {k} ignored one(s)")
    return {"weight": head["linear.weight"][k:].contiguous(), "bias": head["linear.bias"][k:].contiguous()}


__all__ = [
    "FORMATS",
    "TARGETS",
    "ForeignWeights",
    "Target",
    "detect_format",
    "export_weights",
    "get_target",
    "import_classifier",
    "import_student_weights",
    "read_weights_file",
    "student_state",
]
