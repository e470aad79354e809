"""The pretext check: can a point find its own pixel among N candidates in embedding space?

For each frame, ``N`` pairs (one per voxel) are drawn with a fixed generator; a point counts as a hit when
its own pixel is the nearest (highest cosine similarity) of the ``N`` sampled pixels. Chance is ``1/N``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ppkt.data.datasets import FrameRef
from ppkt.data.sample import Batch
from ppkt.data.sources import open_scenes
from ppkt.errors import ConfigError
from ppkt.training.common import load_run_checkpoint, output_dir, write_json
from ppkt.training.data import data_root, frame_splits, make_loader, num_input_features
from ppkt.training.pretrain_module import PPKTPretrainModule


@dataclass
class RetrievalResult:
    top1: float
    chance: float
    frames: int
    points: int


@torch.no_grad()
def retrieval_top1(
    module: PPKTPretrainModule, batches: Iterable[Batch | None], num_points: int = 512, seed: int = 0
) -> RetrievalResult:
    """Mean per-frame top-1 point→pixel retrieval over ``batches`` (module in eval mode)."""
    was_training = module.training
    module.eval()
    g = torch.Generator().manual_seed(seed)
    hits: list[float] = []
    chance: list[float] = []
    total = 0
    for batch in batches:
        if batch is None:
            continue
        batch = batch.to(module.device)
        emb3d = module.point_embeddings(batch)
        features = module.teacher_features(batch)
        starts = torch.cat([batch.offset.new_zeros(1), batch.offset[:-1]])
        for b in range(batch.batch_size):
            sel = (
                ((batch.pair_voxel >= starts[b]) & (batch.pair_voxel < batch.offset[b])).nonzero().squeeze(1)
            )
            n = min(num_points, int(sel.numel()))
            if n < 2:
                continue
            sel = sel[torch.randperm(int(sel.numel()), generator=g)[:n].to(sel.device)]
            p = emb3d[batch.pair_voxel[sel]]
            q = module.pixel_embeddings(features, batch.image_size, batch.pair_image[sel], batch.pair_uv[sel])
            hit = (p @ q.T).argmax(dim=1) == torch.arange(n, device=p.device)
            hits.append(float(hit.float().mean()))
            chance.append(1.0 / n)
            total += n
    module.train(was_training)
    if not hits:
        return RetrievalResult(float("nan"), float("nan"), 0, 0)
    return RetrievalResult(sum(hits) / len(hits), sum(chance) / len(chance), len(hits), total)


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
) -> dict[str, Any]:
    """``ppkt evaluate --task retrieval``: the pretext retrieval of a pretraining checkpoint.

    With ``data`` (an RGB-D dataset folder, read with ``layout`` or the checkpoint's ``data.layout``) every
    frame of it is a candidate (evenly subsampled to ``eval.retrieval_frames``); without, the checkpoint's
    own held-out frames. The same frames and points are scored with the trained networks and with an
    untrained student and UPL built from the same config and seed. Writes ``<out>/metrics.json``.
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
    n_points = cfg.eval.retrieval_points if num_points is None else num_points
    n_frames = cfg.eval.retrieval_frames if num_frames is None else num_frames
    if data not in (None, "synthetic"):
        cfg.data.root = str(data)
        if layout is not None:
            cfg.data.layout = layout
        root = data_root(cfg.data)
        folders = open_scenes(root, cfg.data.layout)
        frames = [FrameRef(f, j) for f in folders for j in range(0, len(f), cfg.data.frame_skip)]
        which = "all frames"
    else:
        splits = frame_splits(cfg.data)
        root, frames, which = splits.root, splits.heldout, "held-out frames"
        if not frames:
            raise ConfigError(f"{path}: the checkpoint's data has no held-out frames; pass --data DIR")
    frames = _even_subset(frames, n_frames)
    loader = make_loader(cfg.data, frames, cfg.trainer.batch_size, train=False, num_workers=0)
    seed = cfg.trainer.seed
    trained = retrieval_top1(module, loader, n_points, seed=seed)
    L.seed_everything(seed, verbose=False)
    fresh = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features))
    random_init = retrieval_top1(fresh, loader, n_points, seed=seed)
    metrics = {
        "task": "retrieval",
        "checkpoint": str(path),
        "data": str(root),
        "layout": cfg.data.layout,
        "frames_used": which,
        "retrieval_top1": trained.top1,
        "retrieval_top1_random_init": random_init.top1,
        "retrieval_chance": trained.chance,
        "retrieval_frames": trained.frames,
        "retrieval_points": n_points,
        "ratio_vs_random_init": trained.top1 / random_init.top1 if random_init.top1 > 0 else float("inf"),
    }
    print("[ppkt] retrieval:\n" + write_json(out / "metrics.json", metrics))
    return metrics
