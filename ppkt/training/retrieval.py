"""The pretext check: can a point find its own pixel among N candidates in embedding space?

For each frame, ``N`` pairs (one per voxel) are drawn with a fixed generator; a point counts as a hit when
its own pixel is the nearest (highest cosine similarity) of the ``N`` sampled pixels. Chance is ``1/N``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ppkt.data.sample import PairedBatch, offset_to_batch
from ppkt.training.pretrain_module import PPKTPretrainModule


@dataclass
class RetrievalResult:
    top1: float
    chance: float
    frames: int
    points: int


@torch.no_grad()
def retrieval_top1(
    module: PPKTPretrainModule, batches: Iterable[PairedBatch | None], num_points: int = 512, seed: int = 0
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
        pair_sample = offset_to_batch(batch.offset)[batch.pair_voxel]
        for b in range(batch.batch_size):
            sel = (pair_sample == b).nonzero().squeeze(1)
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
