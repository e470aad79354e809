"""Fill and use the teacher-feature cache (:mod:`ppkt.data.teacher_cache`) for a pretraining config."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ppkt.config import PretrainConfig
from ppkt.data.frame_dataset import read_sample, source_cameras
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.teacher_input import input_parts
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
        cfg.data.teacher_input,
    )
    return FeatureCache(recipe, cfg.data.cache_dir)


def fill_feature_cache(
    cfg: PretrainConfig,
    frames: Sequence[FrameRef],
    teacher: Teacher | None = None,
    batch_size: int = 16,
    verbose: bool = True,
) -> tuple[FeatureCache, dict[str, Any]]:
    """Compute and store the teacher's maps of every frame of ``frames`` not already (validly) cached —
    of its image, or of each of its cameras (a LiDAR frame: every camera, whatever ``data.multi_camera``).

    Each image, as the frame's paired sample holds it, is resized whole to ``data.image_size`` (bilinear,
    antialiased — as the evaluation resize does) and run through the frozen teacher in batches of about
    ``batch_size`` images. With ``data.skip_bad`` an unreadable frame is skipped with a warning. A frame that
    another process sharing the cache published in the meantime is reused, not computed again. Returns the
    cache and ``{frames, computed, reused, skipped, seconds, bytes}``.
    """
    net = teacher or build_teacher(
        cfg.teacher.name,
        cfg.teacher.weights,
        cfg.teacher.layers,
        inputs=len(input_parts(cfg.data.teacher_input)),
    )
    cache = feature_cache_for(cfg, net)
    start = time.perf_counter()

    def cached(ref: FrameRef, cameras: list[str] | None) -> bool:
        return cache.load(ref.folder, ref.index, cameras) is not None

    todo = [ref for ref in frames if not cached(ref, source_cameras(ref.folder))]
    skipped = computed = 0
    hc, wc = cfg.data.image_size
    d = cfg.data
    if verbose and todo:
        print(f"[ppkt] caching teacher features of {len(todo)} frames in {cache.root}")
    pending: list[tuple[FrameRef, str | None, tuple[int, int]]] = []
    images: list[torch.Tensor] = []

    def flush() -> None:
        if not pending:
            return
        maps = net(torch.cat(images))
        for j, (ref, camera, size) in enumerate(pending):
            cache.store(ref.folder, ref.index, [m[j : j + 1] for m in maps], size, camera)
        pending.clear()
        images.clear()

    for k, ref in enumerate(todo):
        if k > 0 and cached(ref, source_cameras(ref.folder)):  # published by another process
            continue
        try:
            sample = read_sample(
                ref,
                min_depth=d.min_depth,
                max_depth=d.max_depth,
                multi_camera="all",
                teacher_input=d.teacher_input,
                up_axis=d.up_axis,
            )
        except DataError as e:
            if not d.skip_bad:
                raise
            warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=2)
            skipped += 1
            continue
        if sample.cameras is not None and cached(ref, sample.cameras):  # a source without `cameras`
            continue
        img = sample.images
        size = (int(img.shape[-2]), int(img.shape[-1]))
        if size != (hc, wc):
            img = F.interpolate(img, size=(hc, wc), mode="bilinear", align_corners=False, antialias=True)
        for v, camera in enumerate(sample.cameras or [None]):
            pending.append((ref, camera, size))
            images.append(img[v : v + 1].clamp(0.0, 1.0))
        computed += 1
        if len(pending) >= batch_size:
            flush()
    flush()
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
