"""Fill and use the teacher-feature cache (:mod:`ppkt.data.teacher_cache`) for a pretraining config."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ppkt.config import PretrainConfig
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.types import FrameRef
from ppkt.errors import DataError
from ppkt.models.teachers import Teacher, build_teacher


def feature_cache_for(cfg: PretrainConfig, teacher: Teacher) -> FeatureCache:
    """The cache of ``teacher`` (built from ``cfg.teacher``) at the network input size ``data.image_size``."""
    recipe = FeatureCache.make_recipe(
        cfg.teacher.name,
        cfg.teacher.weights,
        teacher.layers,
        teacher.strides,
        teacher.out_channels,
        cfg.data.image_size,
    )
    return FeatureCache(recipe, cfg.data.cache_dir)


def fill_feature_cache(
    cfg: PretrainConfig,
    frames: Sequence[FrameRef],
    teacher: Teacher | None = None,
    batch_size: int = 16,
    verbose: bool = True,
) -> tuple[FeatureCache, dict[str, Any]]:
    """Compute and store the teacher's maps of every frame of ``frames`` not already (validly) cached.

    Each frame's colour image is resized whole to ``data.image_size`` (bilinear, antialiased — as the
    evaluation resize does) and run through the frozen teacher in batches. With ``data.skip_bad`` an
    unreadable frame is skipped with a warning. A frame that another process sharing the cache published in
    the meantime is reused, not computed again. Returns the cache and ``{frames, computed, reused, skipped,
    seconds, bytes}``.
    """
    teacher = teacher or build_teacher(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.layers)
    cache = feature_cache_for(cfg, teacher)
    start = time.perf_counter()
    todo = [ref for ref in frames if cache.load(ref.folder, ref.index) is None]
    skipped = computed = 0
    hc, wc = cfg.data.image_size
    if verbose and todo:
        print(f"[ppkt] caching teacher features of {len(todo)} frames in {cache.root}")
    for i in range(0, len(todo), batch_size):
        chunk, images, sizes = [], [], []
        for ref in todo[i : i + batch_size]:
            if i > 0 and cache.load(ref.folder, ref.index) is not None:  # published by another process
                continue
            try:
                frame = ref.folder.read(ref.index)
            except DataError as e:
                if not cfg.data.skip_bad:
                    raise
                warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=2)
                skipped += 1
                continue
            img = torch.from_numpy(frame.color).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            if img.shape[-2:] != (hc, wc):
                img = F.interpolate(img, size=(hc, wc), mode="bilinear", align_corners=False, antialias=True)
            chunk.append(ref)
            images.append(img.clamp(0.0, 1.0))
            sizes.append(frame.shape)
        if not chunk:
            continue
        maps = teacher(torch.cat(images))
        for j, (ref, size) in enumerate(zip(chunk, sizes)):
            cache.store(ref.folder, ref.index, [m[j : j + 1] for m in maps], size)
        computed += len(chunk)
    stats = {
        "frames": len(frames),
        "computed": computed,
        "reused": len(frames) - computed - skipped,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 2),
        "bytes": cache.size_bytes(),
        "root": str(cache.root),
    }
    if verbose:
        print(
            f"[ppkt] teacher-feature cache {cache.root}: {stats['computed']} computed, {stats['reused']} "
            f"reused, {skipped} skipped in {stats['seconds']} s ({cache.size_bytes() / 2**20:.1f} MiB)"
        )
    return cache, stats
