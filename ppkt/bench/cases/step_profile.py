"""``step_profile``: where the time of a pretraining step and of a fine-tuning step goes, and what mixed
precision (bfloat16 autocast) buys them.

A step is run *instrumented*: its parts run one after the other, each timed, with the same arithmetic as
the training step. Autograd is cut at the boundaries between the parts (a ``detach`` whose gradient is
passed on by hand), so each part's backward is timed with its forward: the gradients are those of the
training step (the chain rule, applied in pieces). The kernel maps are built into the input's cache before
the student runs, so the student's time is its convolutions alone.

Pretraining (``PPKTPretrainModule``, per-pixel pairs; the superpixel path is not profiled):

* ``data``: the loader producing one batch, in this process (read, fuse/pair, augment, voxelize, crop the
  cached teacher maps, collate);
* ``kmap``: the student's kernel maps; ``student``: the student's forward and backward;
* ``teacher_upl``: the teacher's maps (cached or live) and the UPL's pixel embeddings, forward and backward;
* ``loss``: pair sampling, the projection heads and the pretext loss, forward and backward;
* ``optimizer``: ``step`` and ``zero_grad``.

Fine-tuning (``SegmentationModule``, backbone trained): ``data``, ``kmap``, ``student``, ``loss`` (voxel
labels, the linear head, cross-entropy [+ Lovász], forward and backward) and ``optimizer``.

``<part>_share`` = the part's summed time over the timed steps / the summed instrumented step time (so the
shares sum to 1); ``compute_step`` times the plain (not instrumented) training step on the same, pre-loaded
batches, and ``instrumented_over_plain`` says how far the instrumentation moved it.

Mixed precision: the plain step in float32 and under ``torch.autocast(<device>, dtype=torch.bfloat16)``
(what Lightning's ``trainer.precision=bf16-mixed`` does), with the loss of the same batch and weights in
both; and one dense ``mm`` and one ``index_add_`` (the sparse conv's scatter) in bfloat16 vs float32.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.bench.context import BenchContext
from ppkt.bench.timing import num_threads, summarize, synchronize

#: the parts of each step, in the order they run
PRETRAIN_PARTS = ("data", "kmap", "student", "teacher_upl", "loss", "optimizer")
FINETUNE_PARTS = ("data", "kmap", "student", "loss", "optimizer")

#: the products of :func:`_conv_mms`: a deep level's per-offset gather of the default student
CONV_MM_ROWS, CONV_MM_CHANNELS = 2000, 32

MapKey = tuple[str, int, int, int, int]


# ---------------------------------------------------------------------- timing helpers
class PartClock:
    """Seconds per named part, summed over the steps timed with :meth:`part`."""

    def __init__(self, parts: tuple[str, ...], device: torch.device) -> None:
        self.parts = parts
        self.device = device
        self.steps: list[dict[str, float]] = []
        self.threads = torch.get_num_threads()

    def new_step(self) -> None:
        self.steps.append(dict.fromkeys(self.parts, 0.0))
        self.threads = torch.get_num_threads()  # the steps' thread count

    def part(self, name: str) -> _Part:
        return _Part(self, name)

    def summary(self) -> dict[str, Any]:
        """``{part: timing, part_share, step: timing}`` over the recorded steps (timings as
        :func:`~ppkt.bench.timing.time_fn` gives them)."""
        steps = self.steps
        totals = [sum(s.values()) for s in steps]
        out: dict[str, Any] = {"steps": len(steps)}
        grand = sum(totals)
        for p in self.parts:
            vals = [s[p] for s in steps]
            out[p] = self.timing(vals)
            out[f"{p}_share"] = sum(vals) / grand if grand > 0 else float("nan")
        out["step"] = self.timing(totals)
        return out

    def timing(self, times: list[float]) -> dict[str, Any]:
        return {**summarize(times), "threads": self.threads, "device": str(self.device)}


class _Part(AbstractContextManager["_Part"]):
    def __init__(self, clock: PartClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> _Part:
        synchronize(self.clock.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.clock.device)
        self.clock.steps[-1][self.name] += time.perf_counter() - self.t0


def map_keys(net: nn.Module, feats: Tensor, coords: Tensor) -> list[MapKey]:
    """The kernel maps one forward of ``net`` builds, in build order."""
    from ppkt.sparse import SparseTensor

    probe = SparseTensor(feats, coords)
    with torch.no_grad():
        net(probe)
    return list(probe.cache.build_counts)


def with_maps(feats: Tensor, coords: Tensor, keys: list[MapKey]) -> Any:
    """A fresh sparse tensor whose cache already holds the maps ``keys``."""
    from ppkt.sparse import SparseTensor

    x = SparseTensor(feats, coords)
    for kind, stride, k, s, p in keys:
        if kind == "subm":
            x.cache.submanifold(stride, k)
        else:
            x.cache.downsample(stride, k, s, p)
    return x


def cut(t: Tensor) -> Tensor:
    """A leaf copy of ``t`` that collects the gradient to pass on to ``t``."""
    return t.detach().requires_grad_(t.requires_grad)


def pass_back(t: Tensor, leaf: Tensor) -> None:
    if t.requires_grad and leaf.grad is not None:
        t.backward(leaf.grad)


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def compare_precisions(
    ctx: BenchContext, step: Callable[[bool], float], loss: Callable[[bool], float]
) -> dict[str, Any]:
    """The plain step in float32 and under bf16 autocast; the loss of one batch (same weights) in both."""
    l32, l16 = loss(False), loss(True)
    res: dict[str, Any] = {
        "loss_fp32": l32,
        "loss_bf16": l16,
        "loss_rel_diff": abs(l16 - l32) / max(abs(l32), 1e-12),
    }
    losses: list[float] = []
    for bf16, name in ((False, "step_fp32"), (True, "step_bf16")):
        with num_threads(ctx.threads):
            res[name] = ctx.time(functools.partial(_record, losses, step, bf16))
    res["bf16_speedup"] = res["step_fp32"]["median_s"] / res["step_bf16"]["median_s"]
    res["losses_finite"] = bool(all(math.isfinite(v) for v in losses))
    return res


def _record(losses: list[float], step: Callable[[bool], float], bf16: bool) -> None:
    losses.append(step(bf16))


# ---------------------------------------------------------------------- pretraining
def pretrain_frame_refs(cfg: Any, samples: int) -> list[Any]:
    """Training frames for ``samples`` samples of ``data.pairing``: evenly spread frames (``frame``), or
    every frame of evenly spread scenes (``window`` / ``scene``: so the samples are those of training)."""
    from ppkt.data.frame_dataset import group_frames
    from ppkt.training.data import frame_splits

    train = frame_splits(cfg.data, verbose=False).train
    if cfg.data.pairing.mode == "frame":
        step = max(1, len(train) // max(samples, 1))
        return train[::step][:samples]
    by_scene: dict[int, list[Any]] = {}
    for f in train:
        by_scene.setdefault(id(f.folder), []).append(f)
    scenes = list(by_scene.values())
    per_scene = max(1, len(group_frames(scenes[0], cfg.data.pairing.mode, cfg.data.pairing.views)))
    need = min(len(scenes), -(-samples // per_scene))
    step = max(1, len(scenes) // need)
    return [f for refs in scenes[::step][:need] for f in refs]


def pretrain_backward(
    module: Any, batch: Any, keys: list[MapKey], generator: torch.Generator, clock: PartClock
) -> Tensor:
    """The pretraining loss of ``batch`` and its gradients, computed part by part and timed on ``clock``
    (its current step): the same loss and gradients as ``module(batch, generator)["loss"].backward()``
    (per-pixel pairs; the maps ``keys`` are built first, into the input's cache)."""
    spaces = module.loss.spaces
    dev = batch.pair_voxel.device
    with clock.part("loss"):
        idx = module.loss.sample(batch.pair_voxel.shape[0], dev, generator)
    with clock.part("kmap"):
        x = with_maps(batch.feats, batch.coords, keys)
    with clock.part("student"):
        feats = module.student(x)[batch.pair_voxel[idx]]
    with clock.part("teacher_upl"):
        maps = module.teacher_features(batch)
        image, uv = batch.pair_image[idx], batch.pair_uv[idx]
        pix = {sp: module.pixel_embeddings(maps, batch.image_size, image, uv, sp) for sp in spaces}
    f_leaf, p_leaf = cut(feats), {sp: cut(p) for sp, p in pix.items()}
    with clock.part("loss"):
        loss = module.loss({sp: (module.project(f_leaf, sp), p_leaf[sp]) for sp in spaces})["loss"]
        loss.backward()
    with clock.part("teacher_upl"):
        for sp in spaces:
            pass_back(pix[sp], p_leaf[sp])
    with clock.part("student"):
        pass_back(feats, f_leaf)
    return loss.detach()


def profile_pretrain(ctx: BenchContext, cfg: Any, batch_size: int, precision: bool) -> dict[str, Any]:
    from ppkt.pipelines.cache_features import fill_feature_cache
    from ppkt.training.data import make_loader, num_input_features
    from ppkt.training.optim import build_optimizer, trainable
    from ppkt.training.pretrain_module import PPKTPretrainModule

    if cfg.loss.superpixels > 0:
        return {"skipped": "loss.superpixels > 0: the superpixel path is not profiled"}
    s = ctx.sizes
    n_steps = s.warmup + s.repeats
    dev = ctx.device
    torch.manual_seed(0)
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features)).to(dev).train()
    o = cfg.optim
    opt = build_optimizer(
        o.name, trainable([module.student, module.head, module.upl, *module.extra_heads()]), o.lr,
        o.weight_decay, o.momentum,
    )  # fmt: skip
    frames = pretrain_frame_refs(cfg, batch_size * n_steps)
    cache, fill = None, None
    if cfg.teacher.cache:
        teacher = None if ctx.cuda else module.teacher  # the fill runs the teacher on CPU images
        cache, fill = fill_feature_cache(cfg, frames, teacher=teacher, verbose=False)
    loader = make_loader(cfg.data, frames, batch_size, True, num_workers=0, feature_cache=cache, seed=0)
    batches = iter(loader)
    clock = PartClock(PRETRAIN_PARTS, dev)
    kept: list[Any] = []
    keys: list[MapKey] | None = None
    gen = torch.Generator(device=dev)

    def instrumented(i: int) -> bool:
        nonlocal keys
        clock.new_step()
        with clock.part("data"):
            batch = next(batches, None)
            if batch is not None:
                batch = batch.to(dev)
        if batch is None or batch.pair_voxel.shape[0] < 2:
            return False
        kept.append(batch)
        if keys is None:
            keys = map_keys(module.student, batch.feats, batch.coords)
        pretrain_backward(module, batch, keys, gen.manual_seed(i), clock)
        with clock.part("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return True

    ctx.log(f"[bench] step_profile: pretraining ({cfg.data.pairing.mode} pairing), batch {batch_size}")
    with num_threads(ctx.threads):
        done = [instrumented(i) for i in range(n_steps)]
    clock.steps = [st for st, ok in zip(clock.steps[s.warmup :], done[s.warmup :], strict=True) if ok]
    if not clock.steps:
        raise RuntimeError("step_profile: no usable pretraining batch was loaded")
    res: dict[str, Any] = {
        "pairing": cfg.data.pairing.mode,
        "batch_size": batch_size,
        "voxels_per_batch": float(sum(int(b.coords.shape[0]) for b in kept) / len(kept)),
        "pairs_per_batch": float(sum(int(b.pair_voxel.shape[0]) for b in kept) / len(kept)),
        "teacher_cache": cache is not None,
        "cache_fill_s": None if fill is None else fill["seconds"],
        "kernel_maps": len(keys or []),
        **clock.summary(),
    }

    def plain(batch: Any, i: int) -> Tensor:
        return module(batch, gen.manual_seed(i))["loss"]

    counter = iter(range(10**9))

    def step(bf16: bool) -> float:
        i = next(counter)
        batch = kept[i % len(kept)]
        opt.zero_grad(set_to_none=True)
        with autocast(dev, bf16):
            loss = plain(batch, i)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def loss_of(bf16: bool) -> float:
        with torch.no_grad(), autocast(dev, bf16):
            return float(plain(kept[0], 0))

    if precision:
        res["precision"] = compare_precisions(ctx, step, loss_of)
        res["compute_step"] = res["precision"]["step_fp32"]
    else:
        with num_threads(ctx.threads):
            res["compute_step"] = ctx.time(lambda: step(False))
    compute = res["step"]["median_s"] - res["data"]["median_s"]
    res["instrumented_over_plain"] = compute / res["compute_step"]["median_s"]
    return res


# ---------------------------------------------------------------------- fine-tuning
def finetune_backward(
    module: Any,
    batch: Any,
    target: Tensor,
    keys: list[MapKey],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    clock: PartClock,
) -> Tensor:
    """The fine-tuning loss ``loss_fn(logits, target)`` of ``batch`` and its gradients, part by part, timed
    on ``clock``: the same as ``loss_fn(module.head(module.student(x)), target).backward()``."""
    with clock.part("kmap"):
        x = with_maps(batch.feats, batch.coords, keys)
    with clock.part("student"):
        feats = module.student(x)
    f_leaf = cut(feats)
    with clock.part("loss"):
        loss = loss_fn(module.head(f_leaf), target)
        loss.backward()
    with clock.part("student"):
        pass_back(feats, f_leaf)
    return loss.detach()


def profile_finetune(ctx: BenchContext, cfg: Any, precision: bool) -> dict[str, Any]:
    from ppkt.config import to_dict
    from ppkt.data.segmentation import voxel_labels
    from ppkt.losses.lovasz import lovasz_softmax
    from ppkt.sparse import SparseTensor
    from ppkt.training.data import num_input_features
    from ppkt.training.optim import build_optimizer
    from ppkt.training.seg_data import load_scene_splits, train_loader
    from ppkt.training.seg_module import IGNORE, SegmentationModule

    s = ctx.sizes
    n_steps = s.warmup + s.repeats
    dev = ctx.device
    splits = load_scene_splits(cfg.data, verbose=False)
    torch.manual_seed(0)
    module = SegmentationModule(
        to_dict(cfg), num_input_features(cfg.data.features), splits.num_classes, splits.class_names
    )
    t = cfg.trainer
    loader = train_loader(
        cfg.data, splits.train, steps=n_steps, batch_size=t.batch_size, label_mode=cfg.labels_mode,
        label_fraction=cfg.labels, seed=t.seed,
    )  # fmt: skip
    if cfg.class_weights == "inverse_sqrt":
        module.set_class_weights(loader.dataset.class_counts(splits.num_classes))  # type: ignore[attr-defined]
    module = module.to(dev).train()
    o = cfg.optim
    groups = [
        {"params": list(module.head.parameters()), "lr": o.head_lr},
        {"params": list(module.student.parameters()), "lr": o.lr},
    ]
    opt = build_optimizer(o.name, groups, o.lr, o.weight_decay, o.momentum)
    nc = splits.num_classes

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        loss = F.cross_entropy(logits, target, weight=module.class_weights, ignore_index=IGNORE)
        if cfg.loss == "ce+lovasz":
            loss = loss + lovasz_softmax(logits.softmax(dim=1), target, IGNORE)
        return loss

    batches = iter(loader)
    clock = PartClock(FINETUNE_PARTS, dev)
    kept: list[tuple[Any, Tensor]] = []
    keys: list[MapKey] | None = None

    def instrumented() -> None:
        nonlocal keys
        clock.new_step()
        with clock.part("data"):
            batch = next(batches).to(dev)
        if keys is None:
            keys = map_keys(module.student, batch.feats, batch.coords)
        with clock.part("loss"):
            target = voxel_labels(batch.inverse, batch.labels, batch.coords.shape[0], nc, IGNORE)
        kept.append((batch, target))
        finetune_backward(module, batch, target, keys, loss_fn, clock)
        with clock.part("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    ctx.log(f"[bench] step_profile: fine-tuning, batch {t.batch_size}")
    with num_threads(ctx.threads):
        for _ in range(n_steps):
            instrumented()
    clock.steps = clock.steps[s.warmup :]
    res: dict[str, Any] = {
        "batch_size": t.batch_size,
        "voxels_per_batch": float(sum(int(b.coords.shape[0]) for b, _ in kept) / len(kept)),
        "kernel_maps": len(keys or []),
        "loss_name": cfg.loss,
        **clock.summary(),
    }

    def plain(i: int) -> Tensor:
        batch, target = kept[i % len(kept)]
        return loss_fn(module.head(module.student(SparseTensor(batch.feats, batch.coords))), target)

    counter = iter(range(10**9))

    def step(bf16: bool) -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(dev, bf16):
            loss = plain(next(counter))
        loss.backward()
        opt.step()
        return float(loss.detach())

    def loss_of(bf16: bool) -> float:
        with torch.no_grad(), autocast(dev, bf16):
            return float(plain(0))

    if precision:
        res["precision"] = compare_precisions(ctx, step, loss_of)
        res["compute_step"] = res["precision"]["step_fp32"]
    else:
        with num_threads(ctx.threads):
            res["compute_step"] = ctx.time(lambda: step(False))
    compute = res["step"]["median_s"] - res["data"]["median_s"]
    res["instrumented_over_plain"] = compute / res["compute_step"]["median_s"]
    return res


# ---------------------------------------------------------------------- kernels and the CPU
def cpu_flags() -> dict[str, Any]:
    """The CPU model and whether it has the bfloat16 instructions (``/proc/cpuinfo``; Linux)."""
    model: str | None = None
    flags: set[str] = set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "cpu_model": model,
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def kernel_precisions(ctx: BenchContext) -> dict[str, Any]:
    """One ``n × n`` ``mm``, one ``index_add_`` (4 rows scattered per output row, 64 channels) and one
    sparse conv's 27 narrow products (:func:`_conv_mms`, of new shapes and of one shape) in bfloat16 vs
    float32, at 1 thread on the CPU (the configured threads on CUDA)."""
    n = ctx.sizes.matmul_n
    rows = ctx.sizes.layer_voxels[-1]
    ch = 64
    g = torch.Generator().manual_seed(0)
    res: dict[str, Any] = {
        "matmul_n": n,
        "index_add_rows": rows,
        "index_add_sources": 4 * rows,
        "channels": ch,
        "conv_mm_rows": CONV_MM_ROWS,
        "conv_mm_channels": CONV_MM_CHANNELS,
    }
    with num_threads(None if ctx.cuda else 1):
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            a = torch.randn(n, n, generator=g).to(ctx.device, dt)
            b = torch.randn(n, n, generator=g).to(ctx.device, dt)
            t = ctx.time(functools.partial(torch.mm, a, b))
            res[f"matmul_{name}"] = t
            res[f"matmul_{name}_gflops"] = 2 * n**3 / t["median_s"] / 1e9
            src = torch.randn(4 * rows, ch, generator=g).to(ctx.device, dt)
            index = torch.randint(0, rows, (4 * rows,), generator=g).to(ctx.device)
            out = torch.zeros(rows, ch, device=ctx.device, dtype=dt)
            res[f"index_add_{name}"] = ctx.time(functools.partial(out.index_add_, 0, index, src))
            for new_shapes, kind in ((True, "new"), (False, "same")):
                fn = _conv_mms(CONV_MM_ROWS, CONV_MM_CHANNELS, dt, ctx.device, new_shapes)
                res[f"conv_mm_{kind}_{name}"] = ctx.time(fn)
    res["matmul_bf16_speedup"] = res["matmul_fp32"]["median_s"] / res["matmul_bf16"]["median_s"]
    for kind in ("new", "same"):
        t32, t16 = res[f"conv_mm_{kind}_fp32"], res[f"conv_mm_{kind}_bf16"]
        res[f"conv_mm_{kind}_bf16_speedup"] = t32["median_s"] / t16["median_s"]
    res["index_add_bf16_speedup"] = res["index_add_fp32"]["median_s"] / res["index_add_bf16"]["median_s"]
    return res


def _conv_mms(
    rows: int, ch: int, dtype: torch.dtype, device: torch.device, new_shapes: bool
) -> Callable[[], None]:
    """27 narrow ``[m, ch] @ [ch, ch]`` products, one per kernel offset of a sparse conv. ``new_shapes``:
    each with a row count ``m`` not seen before in the run, as in training, where every batch has other
    voxel counts (oneDNN, which runs CPU bfloat16 products, builds a kernel for every new shape); else all
    of ``rows`` rows."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2 * rows, ch, generator=g).to(device, dtype)
    w = torch.randn(ch, ch, generator=g).to(device, dtype)
    seen = iter(range(1, rows))

    def run() -> None:
        for _ in range(27):
            a[: rows + (next(seen) if new_shapes else 0)] @ w

    return run


def case_step_profile(
    ctx: BenchContext, pretrain_cfg: Any = None, finetune_cfg: Any = None
) -> dict[str, Any]:
    """The parts of the default pretraining step (per-frame pairing, and scene pairing at batch 2) and of
    the default fine-tuning step, their shares, and bf16 autocast vs float32 (see the module doc).
    ``pretrain_cfg`` / ``finetune_cfg``: other configs than the defaults (the tests' tiny data)."""
    import dataclasses

    from ppkt.config import FinetuneConfig, PretrainConfig

    pre = pretrain_cfg or PretrainConfig()
    ft = finetune_cfg or FinetuneConfig()
    bs = ctx.sizes.pretrain_batch_size or pre.trainer.batch_size
    scene = dataclasses.replace(
        pre, data=dataclasses.replace(pre.data, pairing=dataclasses.replace(pre.data.pairing, mode="scene"))
    )
    res: dict[str, Any] = {"machine": cpu_flags(), "threads": ctx.threads}
    res["pretrain"] = profile_pretrain(ctx, pre, bs, precision=True)
    res["pretrain_scene"] = profile_pretrain(ctx, scene, min(bs, 2), precision=False)
    res["finetune"] = profile_finetune(ctx, ft, precision=True)
    res["kernels"] = kernel_precisions(ctx)
    return {**summary(res), **res}


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The key figures at the top level, for the printed table: each step's median and its parts' shares,
    the bf16 step speed-ups."""
    out: dict[str, Any] = {}
    for name, parts in (
        ("pretrain", PRETRAIN_PARTS),
        ("pretrain_scene", PRETRAIN_PARTS),
        ("finetune", FINETUNE_PARTS),
    ):
        prof = res[name]
        if "step" not in prof:
            continue
        out[f"{name}_step"] = prof["step"]
        out.update({f"{name}_{p}_share": prof[f"{p}_share"] for p in parts})
        if "precision" in prof:
            out[f"{name}_bf16_speedup"] = prof["precision"]["bf16_speedup"]
    return out
