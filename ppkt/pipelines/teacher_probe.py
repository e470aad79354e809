"""``ppkt teacher-probe``: the linear separability of the frozen teacher's pixel features, layer by layer
(:mod:`ppkt.training.teacher_probe`), on the labelled frames of a pretraining config's data."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ppkt.config import PretrainConfig
from ppkt.data.fusion import dataset_info, has_mesh_labels, labelled_cloud
from ppkt.data.readers import is_lidar_layout
from ppkt.data.teacher_input import input_parts
from ppkt.data.types import FrameRef, FusedScene
from ppkt.errors import ConfigError, DataError
from ppkt.models.teachers import build_teacher
from ppkt.training.common import output_dir, write_json
from ppkt.training.data import frame_splits
from ppkt.training.teacher_probe import fit_linear_probe, pixel_features, score_probe


def _labelled_clouds(frames: list[FrameRef]) -> tuple[dict[str, FusedScene], list[str]]:
    """The labelled cloud of every scene folder of ``frames`` that labels its scene as a whole (an optional
    ``labelled_cloud()``, e.g. ScanNet's mesh), keyed by ``str(folder.root)``, and the roots of such folders
    that have no labels (``labelled_cloud()`` is ``None``: skipped). Other folders need label images."""
    clouds: dict[str, FusedScene] = {}
    unlabelled: list[str] = []
    for root, folder in {str(r.folder.root): r.folder for r in frames}.items():
        if not has_mesh_labels(folder):
            continue
        cloud = labelled_cloud(folder)
        if cloud is None:
            unlabelled.append(root)
        else:
            clouds[root] = cloud
    return clouds, unlabelled


def run_teacher_probe(
    cfg: PretrainConfig, out: str | Path, pixels_per_frame: int = 2000, steps: int = 300
) -> dict[str, Any]:
    """Probe ``cfg.teacher`` on ``cfg.data``: fit on the pretraining's training frames, score on its held-out
    frames (``data.heldout``), every layer alone and all together. Writes ``<out>/metrics.json``."""
    if pixels_per_frame < 1:
        raise ConfigError(f"--pixels must be >= 1, got {pixels_per_frame}")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if is_lidar_layout(cfg.data.layout):
        raise ConfigError(
            f"config key 'data.layout': the teacher probe reads labelled RGB-D frames; {cfg.data.layout!r} "
            "holds LiDAR scans"
        )
    if cfg.data.heldout <= 0:
        raise ConfigError(
            "config key 'data.heldout': the teacher probe scores the held-out frames; set it > 0"
        )
    out = output_dir(out)
    start = time.perf_counter()
    splits = frame_splits(cfg.data)
    if not splits.train or not splits.heldout:
        raise ConfigError(
            f"{splits.root}: the teacher probe needs training and held-out frames, got {len(splits.train)} "
            f"and {len(splits.heldout)} (data.heldout={cfg.data.heldout})"
        )
    clouds, unlabelled = _labelled_clouds([*splits.train, *splits.heldout])
    if unlabelled:
        print(
            f"[ppkt] warning: teacher probe skips {len(unlabelled)} scene(s) without labels: "
            + ", ".join(unlabelled),
            file=sys.stderr,
            flush=True,
        )
    train_frames = [r for r in splits.train if str(r.folder.root) not in unlabelled]
    test_frames = [r for r in splits.heldout if str(r.folder.root) not in unlabelled]
    if not train_frames or not test_frames:
        raise DataError(
            f"{splits.root}: the teacher probe needs labelled training and held-out frames; the labelled "
            f"scenes hold {len(train_frames)} and {len(test_frames)}"
        )
    look = cfg.data.teacher_input
    teacher = build_teacher(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.layers, len(input_parts(look)))
    size = (int(cfg.data.image_size[0]), int(cfg.data.image_size[1]))
    tolerance = cfg.data.pairing.depth_tolerance
    seed, n = cfg.trainer.seed, pixels_per_frame
    up = cfg.data.up_axis
    train = pixel_features(teacher, train_frames, size, n, seed, clouds, tolerance, look, up)
    test = pixel_features(teacher, test_frames, size, n, seed + 1, clouds, tolerance, look, up)
    info = dataset_info(train_frames[0].folder)
    names = list(info["classes"])[1:] if info and info.get("classes") else None
    cloud_names = next((c.class_names for c in clouds.values() if c.class_names), None)
    if names is None and cloud_names is not None:
        names = list(cloud_names)[1:]
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    if names is None or len(names) < num_classes:
        names = [f"class_{i + 1}" for i in range(num_classes)]
    num_classes = len(names)
    layers = list(teacher.layers)
    subsets = [[i] for i in range(len(layers))] + ([list(range(len(layers)))] if len(layers) > 1 else [])
    results: list[dict[str, Any]] = []
    for subset in subsets:
        probe = fit_linear_probe(train.columns(subset), train.labels, num_classes, steps=steps)
        score = score_probe(probe, test.columns(subset), test.labels, num_classes)
        fit = score_probe(probe, train.columns(subset), train.labels, num_classes)
        names_used = [layers[i] for i in subset]
        results.append(
            {
                "layers": names_used,
                "channels": int(sum(teacher.out_channels[i] for i in subset)),
                "miou": score.miou,
                "accuracy": score.accuracy,
                "train_miou": fit.miou,
                "per_class_iou": {
                    n: (None if v != v else v) for n, v in zip(names, score.per_class_iou, strict=True)
                },
            }
        )
        print(
            f"[ppkt] teacher probe {'+'.join(names_used)}: test mIoU {100 * score.miou:.2f} "
            f"(train {100 * fit.miou:.2f})",
            flush=True,
        )
    metrics = {
        "task": "teacher_probe",
        "teacher": cfg.teacher.name,
        "data": str(splits.root),
        "image_size": list(size),
        "teacher_input": look,
        "train_frames": len(train_frames),
        "test_frames": len(test_frames),
        "labels": "labelled clouds projected into the frames" if clouds else "label images",
        "skipped_unlabelled_scenes": unlabelled,
        "train_pixels": int(train.labels.numel()),
        "test_pixels": int(test.labels.numel()),
        "steps": steps,
        "results": results,
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
