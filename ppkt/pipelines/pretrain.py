"""``ppkt pretrain``: build everything from a config, train with Lightning, write the pretext check."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from ppkt.config import PretrainConfig
from ppkt.data.types import Frame
from ppkt.errors import DataError, WeightsError
from ppkt.models.state import check_state_dict
from ppkt.pipelines.cache_features import fill_feature_cache
from ppkt.pipelines.report import pretraining_panels, save_panels
from ppkt.training.common import (
    checkpoint_callbacks,
    read_checkpoint,
    resolve_precision,
    run_loggers,
    start_run,
    write_json,
)
from ppkt.training.data import frame_splits, make_loader, num_input_features
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.resume import AtomicCheckpointIO, ResumeState
from ppkt.training.retrieval import retrieval_top1
from ppkt.training.view_consistency import consistency_metrics


def mean_head_tail(values: list[float], fraction: float = 0.1) -> tuple[float, float]:
    """Mean of the first and of the last ``fraction`` of ``values`` (at least one value each)."""
    if not values:
        return float("nan"), float("nan")
    k = max(1, math.ceil(fraction * len(values)))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def build_trainer(
    cfg: PretrainConfig, out: Path, monitor: str | None, callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    """The Lightning trainer of ``cfg``: ``best.ckpt`` by ``monitor``, ``last.ckpt`` every
    ``trainer.checkpoint_every_n_steps`` steps and at the end, written atomically; ``callbacks`` added."""
    t = cfg.trainer
    return L.Trainer(
        default_root_dir=out,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        callbacks=[
            *checkpoint_callbacks(out, monitor, "min", t.checkpoint_every_n_steps),
            *(callbacks or []),
        ],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the EpochSampler of make_loader shards itself (ResumeState)
        logger=run_loggers(out),
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        num_sanity_val_steps=0,
        deterministic=False,
    )


def check_resume(resume: str | None, out: Path, module: L.LightningModule) -> str | None:
    """The checkpoint path to resume from (``"last"``: ``<out>/checkpoints/last.ckpt``), checked before any
    work: a :class:`WeightsError` names it when it is missing, unreadable, not a ``ppkt pretrain`` training
    checkpoint, or made with a config whose networks differ from this one."""
    if resume is None:
        return None
    path = out / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume).expanduser()
    if not path.is_file():
        hint = f" (no earlier run in {out})" if resume == "last" else ""
        raise WeightsError(f"{path}: checkpoint to resume from does not exist{hint}")
    ckpt = read_checkpoint(path)
    if "optimizer_states" not in ckpt:
        raise WeightsError(f"{path}: not a Lightning training checkpoint (no optimizer state)")
    check_state_dict(
        ckpt["state_dict"],
        module.state_dict(),
        what=str(path),
        target="this config's networks",
        hint=" (not a ppkt pretrain checkpoint, or made with another teacher/upl/student/data.features; "
        "resume with the config.yaml of its run)",
        show=3,
        source="checkpoint",
    )
    return str(path)


def run_pretrain(
    cfg: PretrainConfig, out: str | Path, resume: str | None = None, callbacks: Sequence[L.Callback] = ()
) -> dict[str, Any]:
    """Pretrain and write ``config.yaml``, checkpoints, logs and ``metrics.json`` under ``out``;
    ``callbacks`` are added to the trainer's."""
    start = time.time()
    out = start_run(cfg, out, cfg.trainer.seed, cfg.trainer.threads)

    splits = frame_splits(cfg.data)
    print(f"[ppkt] data {splits.root}: {len(splits.train)} training frames, {len(splits.heldout)} held out")
    bs = cfg.trainer.batch_size
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features))
    resume = check_resume(resume, out, module)
    cache, cache_stats = None, None
    if cfg.teacher.cache:
        cache, cache_stats = fill_feature_cache(cfg, splits.train + splits.heldout, module.teacher)
    sp, seed = cfg.loss.superpixels, cfg.trainer.seed
    train_loader = make_loader(
        cfg.data, splits.train, bs, train=True, feature_cache=cache, superpixels=sp, seed=seed
    )
    val_loader = (
        make_loader(cfg.data, splits.heldout, bs, train=False, feature_cache=cache, superpixels=sp, seed=seed)
        if splits.heldout
        else None
    )

    init_state = copy.deepcopy(module.state_dict())
    monitor = "val/loss" if val_loader is not None else None
    resume_state = ResumeState(train_loader, val_loader)
    trainer = build_trainer(cfg, out, monitor, [resume_state, *callbacks])
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    train_time = time.time() - start
    if resume is None and trainer.global_step == 0:
        raise DataError(
            f"{splits.root}: no training step ran: every training batch was empty, all "
            f"{len(splits.train)} training frames were skipped as unreadable (data.skip_bad=true; see the "
            "warnings above)"
        )

    metrics: dict[str, Any] = {}
    if not trainer.is_global_zero:
        return metrics
    loss_initial, loss_final = mean_head_tail(module.step_losses)
    metrics = {
        "loss_initial": loss_initial,
        "loss_final": loss_final,
        "steps": trainer.global_step,
        "train_frames": len(splits.train),
        "heldout_frames": len(splits.heldout),
        "wall_time_train_s": round(train_time, 1),
    }
    if resume_state.resumed_from is not None:
        metrics["resumed_from_step"] = resume_state.resumed_from
    if cache_stats is not None:
        metrics["teacher_cache"] = cache_stats
    if splits.heldout:
        held = splits.heldout[: cfg.eval.retrieval_frames]
        loader = make_loader(cfg.data, held, bs, train=False, num_workers=0, seed=cfg.trainer.seed)
        trained = retrieval_top1(module, loader, cfg.eval.retrieval_points, seed=cfg.trainer.seed)
        fresh = copy.deepcopy(module)
        fresh.load_state_dict(init_state)
        random_init = retrieval_top1(fresh, loader, cfg.eval.retrieval_points, seed=cfg.trainer.seed)
        # what the student learned, at a glance: PCA of its point features on the first held-out frame
        ref = splits.heldout[0]
        try:
            item = ref.folder.read(ref.index)
            if isinstance(item, Frame):
                save_panels(out / "features.png", pretraining_panels(module, fresh, item))
            else:  # a LiDAR scan: no single RGB-D image to paint the features on
                print("[ppkt] features.png skipped: the data are not RGB-D frames")
        except DataError as e:
            print(f"[ppkt] features.png skipped: {e}")
        metrics.update(
            retrieval_top1_heldout=trained.top1,
            retrieval_top1_random_init=random_init.top1,
            retrieval_chance=trained.chance,
            retrieval_frames=trained.frames,
            retrieval_points=cfg.eval.retrieval_points,
        )
        metrics.update(consistency_metrics(cfg, held, module, fresh))
    metrics["wall_time_s"] = round(time.time() - start, 1)
    print("[ppkt] metrics:\n" + write_json(out / "metrics.json", metrics))
    return metrics
