"""``ppkt export``: the student of a ``ppkt pretrain`` / ``ppkt finetune`` checkpoint in another format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppkt.errors import WeightsError
from ppkt.export import export_weights, get_target
from ppkt.models.state import check_state_dict
from ppkt.models.student import SparseUNet, build_student
from ppkt.training.common import read_checkpoint


def run_export(ckpt_path: str | Path, to: str, out: str | Path, head: str = "auto") -> dict[str, Any]:
    """Write the student of the ppkt checkpoint ``ckpt_path`` as a ``to`` checkpoint (``ppkt.export``
    targets) to ``out``; returns the written dict.

    ``head``: ``auto`` exports the run's linear head as the target's ``final`` layer for ``minkunet34c``
    (SLidR's checkpoints carry their projection) and for a fine-tuning checkpoint (a classifier: to
    ``minkunet34c`` with SLidR's extra output 0 for the ignored label 0; to ``mmdet3d`` as
    ``decode_head.conv_seg``), not for a pretraining checkpoint to Pointcept or mmdet3d (whose ``final``
    is a classifier); ``yes`` / ``no`` force it.
    """
    path = Path(ckpt_path)
    target = get_target(to) if to != "onnx" else None
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters", {})
    name = hp.get("config", {}).get("student", {}).get("name")
    in_channels = hp.get("in_channels")
    if not isinstance(name, str) or not isinstance(in_channels, int):
        raise WeightsError(f"{path}: no student.name / in_channels in its hyper-parameters (not a ppkt run?)")
    sd = ckpt["state_dict"]
    state = {k[len("student.") :]: v for k, v in sd.items() if k.startswith("student.")}
    lin = {k[len("head.linear.") :]: v for k, v in sd.items() if k.startswith("head.linear.")}
    if target is None:
        return _export_onnx(path, name, in_channels, state, Path(out))
    if head not in ("auto", "yes", "no"):
        raise WeightsError(f"--head must be auto, yes or no, got {head!r}")
    classifier = "num_classes" in hp
    with_head = head == "yes" or (head == "auto" and (target.name == "minkunet34c" or classifier))
    if with_head and set(lin) != {"weight", "bias"}:
        raise WeightsError(f"{path}: holds no linear head (head.linear.weight/bias) to export")
    student = _load_student(path, name, in_channels, state)
    what = f"{path}: the student {name!r}"
    result = export_weights(
        student, state, to, head=lin if with_head else None, what=what, classifier=classifier
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(result, tmp)
    tmp.replace(out)
    n = len(next(iter(result.values())))
    print(
        f"[ppkt] {name} ({in_channels} input channels) -> {target.network}: {n} tensors"
        f"{' (with its final layer)' if with_head else ''} in {out}"
    )
    return result


def _load_student(path: Path, name: str, in_channels: int, state: dict[str, Any]) -> SparseUNet:
    student = build_student(name, in_channels)
    what = f"{path}: the student {name!r}"
    check_state_dict(state, student.state_dict(), what=what, target=f"student.name={name!r}")
    student.load_state_dict(state)
    return student


def _export_onnx(path: Path, name: str, in_channels: int, state: dict[str, Any], out: Path) -> dict[str, Any]:
    """The student's inference graph (``ppkt.export.onnx``; needs the ``onnx`` extra)."""
    from ppkt.export.onnx import export_onnx

    student = _load_student(path, name, in_channels, state)
    g = torch.Generator().manual_seed(0)  # any example cloud: the number of voxels is dynamic
    coords = torch.unique(torch.randint(0, 24, (2000, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros(coords.shape[0], 1, dtype=coords.dtype), coords], 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        names = export_onnx(student, coords, out)
    except ImportError as e:
        raise WeightsError(
            f"ppkt export --to onnx needs the onnx package (pip install 'ppkt[onnx]'): {e}"
        ) from e
    print(
        f"[ppkt] {name} -> ONNX graph {out}; inputs: {', '.join(names)} (ppkt.export.onnx.neighbour_tables)"
    )
    return {"inputs": names}
