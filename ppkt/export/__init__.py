"""Portable weights: ppkt students in other frameworks' checkpoint formats, and back.

* :func:`export_weights`: a ppkt student's state dict (+ optional linear head) -> the checkpoint dict of a
  target (:data:`~ppkt.export.targets.TARGETS`: ``pointcept`` = Pointcept's ``SpUNet-v1m1``,
  ``minkunet34c`` = MinkowskiEngine's / SLidR's ``MinkUNet34C``), refusing a student whose architecture
  is not the target's (:class:`~ppkt.errors.WeightsError`).
* :func:`import_student_weights`: a Pointcept or MinkUNet/SLidR checkpoint file -> the state dict of a ppkt
  student (``ppkt finetune --init FILE``); ``None`` for a ppkt checkpoint.
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
from ppkt.export.targets import TARGETS, Target, get_target
from ppkt.models.student import SparseUNet

#: the file formats :func:`detect_format` recognises, besides ppkt's own
FORMATS = ("pointcept", "minkunet34c")


@dataclass
class ForeignWeights:
    """A foreign checkpoint: its ``target`` and the state dict without prefixes (``final.*`` included)."""

    target: Target
    state: dict[str, Tensor]

    @property
    def backbone(self) -> dict[str, Tensor]:
        """The state without the classifier / projection ``final.*``."""
        return {k: v for k, v in self.state.items() if not k.startswith("final.")}


def export_weights(
    student: SparseUNet,
    state: Mapping[str, Tensor],
    target: str,
    head: Mapping[str, Tensor] | None = None,
    what: str = "the student",
) -> dict[str, Any]:
    """The checkpoint dict of ``target`` holding ``state`` (the state dict of ``student``'s architecture)
    and, when given, ``head`` (an ``nn.Linear`` ``{"weight", "bias"}`` on the student's output: the
    target's ``final`` layer)."""
    t = get_target(target)
    t.check_arch(student.arch, what)
    if head is not None and student.head is not None:
        raise WeightsError(f"{what} has its own head: export it without a second one")
    theirs = t.export_state({**state, **{f"linear.{k}": v for k, v in (head or {}).items()}})
    return t.wrap(theirs)


def detect_format(obj: Any) -> ForeignWeights | None:
    """The foreign weights in a loaded checkpoint ``obj``, ``None`` when it is not one (a ppkt checkpoint,
    or something else for the caller to report). OpenPCDet files are refused with a ``WeightsError``."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("model_state"), dict):
        raise WeightsError(
            "an OpenPCDet checkpoint (model_state): no ppkt student has the architecture of its 3D backbones"
        )
    candidates: list[tuple[str, dict[str, Any]]] = []
    for container in ("state_dict", "model_points", "model"):
        if isinstance(obj.get(container), dict):
            candidates.append((container, obj[container]))
    candidates.append(("", obj))
    for _, sd in candidates:
        if any(isinstance(k, str) and k.startswith("student.") for k in sd):
            return None  # ppkt's own checkpoint
        for anchor, name in (("conv_input.0.weight", "pointcept"), ("conv0p1s1.kernel", "minkunet34c")):
            keys = [k for k in sd if isinstance(k, str) and k.endswith(anchor)]
            if not keys:
                continue
            prefix = min(keys, key=len)[: -len(anchor)]
            state = {
                k[len(prefix) :]: v
                for k, v in sd.items()
                if isinstance(k, str) and k.startswith(prefix) and isinstance(v, Tensor)
            }
            return ForeignWeights(TARGETS[name], state)
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
    t = foreign.target
    what = f"{path} ({t.network} weights)"
    label = f"student.name={name!r}" if name else "the student"
    t.check_arch(student.arch, label)
    expected = student.state_dict()
    return t.import_state(foreign.backbone, expected, what=what, target=label)


__all__ = [
    "FORMATS",
    "TARGETS",
    "ForeignWeights",
    "Target",
    "detect_format",
    "export_weights",
    "get_target",
    "import_student_weights",
    "read_weights_file",
]
