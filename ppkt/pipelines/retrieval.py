"""ppkt evaluate --task retrieval: score a pretraining checkpoint on the pretext task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from ppkt.data.frame_dataset import frame_refs
from ppkt.data.readers import is_lidar_layout, open_scans, open_scenes
from ppkt.data.types import FrameRef
from ppkt.errors import ConfigError
from ppkt.training.common import load_run_checkpoint, output_dir, write_json
from ppkt.training.data import data_root, frame_splits, make_loader, num_input_features
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.retrieval import retrieval_top1
from ppkt.training.view_consistency import consistency_metrics


def _even_subset(frames: list[FrameRef], n: int) -> list[FrameRef]:
    """``n`` frames spread evenly over ``frames`` (all of them when ``n <= 0`` or there are fewer)."""
    if n <= 0 or len(frames) <= n:
        return frames
    return [frames[round(i * (len(frames) - 1) / (n - 1))] if n > 1 else frames[0] for i in range(n)]


def run_retrieval_eval(
    ckpt_path: str | Path,
    data: str | None,
    out: str | Path,
    layout: str | None = None,
    num_points: int | None = None,
    num_frames: int | None = None,
    pairing: str | None = None,
) -> dict[str, Any]:
    """``ppkt evaluate --task retrieval``: the pretext retrieval of a pretraining checkpoint.

    With ``data`` (an RGB-D dataset folder, read with ``layout`` or the checkpoint's ``data.layout``) every
    frame of it is a candidate (evenly subsampled to ``eval.retrieval_frames``); without, the checkpoint's
    own held-out frames. The same frames and points are scored with the trained networks and with an
    untrained student and UPL built from the same config and seed, and so is the view consistency of both
    students (:mod:`ppkt.training.view_consistency`). ``pairing`` (``frame`` / ``window`` / ``scene``)
    scores samples of that kind instead of the checkpoint's ``data.pairing.mode`` — e.g. ``frame`` to compare
    checkpoints pretrained with different pairings on the same single frames. Writes ``<out>/metrics.json``.
    """
    if num_points is not None and num_points < 2:
        raise ConfigError(f"--points must be >= 2 (points scored per frame), got {num_points}")
    if num_frames is not None and num_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {num_frames}")
    path = Path(ckpt_path)
    out = output_dir(out)
    module = load_run_checkpoint(PPKTPretrainModule, path, "pretrain")
    cfg = module.cfg
    cfg.teacher.cache = False
    if pairing is not None:
        if pairing not in ("frame", "window", "scene"):
            raise ConfigError(f"--pairing: {pairing!r} is not one of ['frame', 'window', 'scene']")
        cfg.data.pairing.mode = pairing  # type: ignore[assignment]
        cfg.data.check_pairing_fits_layout()
    n_points = cfg.eval.retrieval_points if num_points is None else num_points
    n_frames = cfg.eval.retrieval_frames if num_frames is None else num_frames
    if data not in (None, "synthetic"):
        cfg.data.root = str(data)
        if layout is not None:
            cfg.data.layout = layout
        root = data_root(cfg.data)
        layout = cfg.data.layout
        folders = open_scans(root, layout) if is_lidar_layout(layout) else open_scenes(root, layout)
        frames = frame_refs(folders, cfg.data.frame_skip)  # type: ignore[arg-type]
        which = "frames"
    else:
        splits = frame_splits(cfg.data)
        root, frames, which = splits.root, splits.heldout, "held-out frames"
        if not frames:
            raise ConfigError(f"{path}: the checkpoint's data has no held-out frames; pass --data DIR")
    total = len(frames)
    frames = _even_subset(frames, n_frames)
    n = len(frames)
    which = f"all {total} {which}" if n == total else f"{n} of {total} {which} (evenly spaced)"
    loader = make_loader(cfg.data, frames, cfg.trainer.batch_size, train=False, num_workers=0)
    seed = cfg.trainer.seed
    trained = retrieval_top1(module, loader, n_points, seed=seed)
    L.seed_everything(seed, verbose=False)
    fresh = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features))
    random_init = retrieval_top1(fresh, loader, n_points, seed=seed)
    consistency = consistency_metrics(cfg, frames, module, fresh)
    metrics = {
        "task": "retrieval",
        "checkpoint": str(path),
        "data": str(root),
        "layout": cfg.data.layout,
        "frames_used": which,
        "pairing": cfg.data.pairing.mode,
        "retrieval_top1": trained.top1,
        "retrieval_top1_random_init": random_init.top1,
        "retrieval_chance": trained.chance,
        "retrieval_frames": trained.frames,
        "retrieval_points": n_points,
        "ratio_vs_random_init": trained.top1 / random_init.top1 if random_init.top1 > 0 else float("inf"),
        **consistency,
    }
    print("[ppkt] retrieval:\n" + write_json(out / "metrics.json", metrics))
    return metrics
