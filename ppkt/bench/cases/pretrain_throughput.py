"""``pretrain_throughput``: frames/s of the full pretraining step, live teacher vs teacher-feature cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ppkt.bench.context import BenchContext
from ppkt.bench.inputs import default_pretrain_config, load_pretrain_batches, pretrain_frames
from ppkt.bench.timing import num_threads


def case_pretrain_throughput(ctx: BenchContext) -> dict[str, Any]:
    """Frames/s of the full pretraining step (module forward + backward + AdamW step) on the default
    config's data, live teacher vs teacher-feature cache; batches pre-loaded (data loading excluded)."""
    from ppkt.pipelines.cache_features import fill_feature_cache
    from ppkt.training.data import num_input_features
    from ppkt.training.optim import build_optimizer, trainable
    from ppkt.training.pretrain_module import PPKTPretrainModule

    cfg = default_pretrain_config()
    bs = ctx.sizes.pretrain_batch_size or cfg.trainer.batch_size
    nb = ctx.sizes.pretrain_batches
    torch.manual_seed(0)
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).to(ctx.device)
    module.train()
    o = cfg.optim
    opt = build_optimizer(
        o.name, trainable([module.student, module.head, module.upl]), o.lr, o.weight_decay, o.momentum
    )
    ctx.log(f"[bench] pretrain_throughput: {nb} batches of {bs} frames")
    live = [b.to(ctx.device) for b in load_pretrain_batches(cfg, bs, nb)]
    # the fill runs the teacher on CPU images: reuse the module's teacher only when it is on the CPU
    cache, stats = fill_feature_cache(
        cfg, pretrain_frames(cfg, bs * nb), teacher=None if ctx.cuda else module.teacher, verbose=False
    )
    cached = [b.to(ctx.device) for b in load_pretrain_batches(cfg, bs, nb, feature_cache=cache)]

    def cycle(batches: list[Any]) -> Iterator[Any]:
        i = 0
        while True:
            yield batches[i % len(batches)]
            i += 1

    def measure(batches: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        it = cycle(batches)

        def step() -> None:
            batch = next(it)
            opt.zero_grad(set_to_none=True)
            module(batch)["loss"].backward()
            opt.step()

        it_t = cycle(batches)

        def teacher() -> None:
            module.teacher_features(next(it_t))

        with num_threads(ctx.threads):
            return ctx.time(step), ctx.time(teacher)

    step_live, teacher_live = measure(live)
    step_cached, teacher_cached = measure(cached)
    return {
        "batch_size": bs,
        "batches": nb,
        "voxels_per_batch": float(np.mean([int(b.coords.shape[0]) for b in live])),
        "image_size": list(cfg.data.image_size),
        "teacher": cfg.teacher.name,
        "note": "data loading excluded (batches pre-loaded in memory; with the cache, the crop/resize of "
        "the cached maps happens in the data loader and is excluded too)",
        "step": step_live,
        "step_cached": step_cached,
        "teacher_time": teacher_live,
        "teacher_time_cached": teacher_cached,
        "fps": bs / step_live["median_s"],
        "fps_cached": bs / step_cached["median_s"],
        "teacher_share": teacher_live["median_s"] / step_live["median_s"],
        "teacher_share_cached": teacher_cached["median_s"] / step_cached["median_s"],
        "cache_fill": {k: stats[k] for k in ("frames", "computed", "reused", "seconds")},
    }
