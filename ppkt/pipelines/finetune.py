"""``ppkt finetune`` and ``ppkt evaluate``: segmentation from scratch or from a pretrained student."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ppkt.config import FinetuneConfig, load_config, to_dict
from ppkt.config.finetune import SegDataConfig
from ppkt.data.segmentation import SceneSegmentationDataset
from ppkt.data.types import FusedScene
from ppkt.errors import ConfigError, DataError
from ppkt.export import detect_format, read_weights_file
from ppkt.training.common import (
    checkpoint_callbacks,
    load_run_checkpoint,
    output_dir,
    resolve_precision,
    run_loggers,
    start_run,
    write_json,
)
from ppkt.training.data import num_input_features
from ppkt.training.foreign import foreign_segmentation_module
from ppkt.training.resume import AtomicCheckpointIO
from ppkt.training.seg_data import SceneSplits, eval_loader, load_scene_splits, require_labels, train_loader
from ppkt.training.seg_module import SegmentationModule, iou_from_confusion


@torch.no_grad()
def evaluate_segmentation(
    module: SegmentationModule, cfg: SegDataConfig, scenes: list[FusedScene]
) -> dict[str, Any]:
    """mIoU (over classes present in the ground truth), per-class IoU and overall accuracy, in percent,
    on the original fused points (voxel predictions mapped back through the inverse map)."""
    was_training = module.training
    module.eval()
    module.confusion.reset()
    for batch in eval_loader(cfg, scenes):
        module.update_confusion(batch.to(module.device))
    iou, miou, acc = iou_from_confusion(module.confusion.compute().cpu())
    module.confusion.reset()
    module.train(was_training)
    return {
        "miou": float(miou) * 100,
        "accuracy": acc * 100,
        "per_class_iou": {
            n: (None if math.isnan(v) else v * 100) for n, v in zip(module.class_names, iou.tolist())
        },
        "scenes": len(scenes),
    }


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'class':<14} {'IoU %':>7}", "-" * 22]
    for name, v in metrics["per_class_iou"].items():
        lines.append(f"{name:<14} {'   n/a' if v is None else f'{v:7.2f}'}")
    lines += [
        "-" * 22,
        f"{'mIoU':<14} {metrics['miou']:7.2f}",
        f"{'accuracy':<14} {metrics['accuracy']:7.2f}",
    ]
    return "\n".join(lines)


def run_finetune(
    cfg: FinetuneConfig, out: str | Path, splits: SceneSplits | None = None, verbose: bool = True
) -> dict[str, Any]:
    """Fine-tune (or linear-probe) and evaluate on the test scenes; writes config, checkpoints, logs and
    ``metrics.json`` under ``out``. ``splits`` lets callers (the demo) reuse already loaded scenes."""
    start = time.time()
    out = start_run(cfg, out, cfg.trainer.seed, cfg.trainer.threads, verbose)
    if splits is None:
        splits = load_scene_splits(cfg.data, verbose)
    in_channels = num_input_features(cfg.data.features)
    module = SegmentationModule(to_dict(cfg), in_channels, splits.num_classes, splits.class_names)
    if cfg.init != "scratch":
        module.load_backbone(cfg.init)
    elif cfg.probe and verbose:
        print("[ppkt] linear probe of a randomly initialised backbone")
    t = cfg.trainer
    loader = train_loader(
        cfg.data,
        splits.train,
        steps=t.max_steps,
        batch_size=t.batch_size,
        label_mode=cfg.labels_mode,
        label_fraction=cfg.labels,
        seed=t.seed,
    )
    dataset = loader.dataset
    assert isinstance(dataset, SceneSegmentationDataset)
    if dataset.num_labelled_points() == 0:
        raise DataError(
            f"{splits.root}: the labelled training scenes ({', '.join(s.name for s in dataset.scenes)}) "
            "hold no labelled points (label 0 = unlabelled everywhere)"
        )
    if cfg.class_weights == "inverse_sqrt":
        module.set_class_weights(dataset.class_counts(splits.num_classes))
    val = eval_loader(cfg.data, splits.val) if (t.val_every_n_steps > 0 and splits.val) else None
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=t.max_steps,
        max_epochs=1,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=resolve_precision(t.precision, t.accelerator),
        callbacks=checkpoint_callbacks(out, "val/miou" if val is not None else None, "max"),
        plugins=[AtomicCheckpointIO()],
        logger=run_loggers(out),
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        val_check_interval=t.val_every_n_steps if val is not None else None,
        num_sanity_val_steps=0,
        enable_model_summary=verbose,
    )
    trainer.fit(module, loader, val)
    metrics: dict[str, Any] = {
        "init": "scratch" if cfg.init == "scratch" else "pretrained",
        "mode": "probe" if cfg.probe else "finetune",
        "labels": cfg.labels,
        "labels_mode": cfg.labels_mode,
        "seed": t.seed,
        "steps": trainer.global_step,
        "train_scenes_labelled": len(loader.dataset),  # type: ignore[arg-type]
        "train_points_labelled": dataset.num_labelled_points(),
        "test": evaluate_segmentation(module, cfg.data, splits.test),
    }
    metrics["wall_time_s"] = round(time.time() - start, 1)
    write_json(out / "metrics.json", metrics)
    if verbose:
        print(f"[ppkt] test scenes ({len(splits.test)}):\n" + format_table(metrics["test"]))
    return metrics


def run_evaluate(
    ckpt_path: str | Path,
    data: str | None,
    out: str | Path,
    split: str = "test",
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate a ``ppkt finetune`` checkpoint on ``split`` of ``data`` (a folder, or ``synthetic`` / None
    for the data the model was trained on).

    A Pointcept / SLidR (MinkowskiEngine) / mmdet3d segmentation checkpoint (recognised by its keys,
    :func:`ppkt.export.detect_format`) is evaluated too: it carries no ppkt config, so the student preset,
    input features and data are those of the fine-tuning ``config`` file and ``key=value`` ``overrides``
    (e.g. ``student.name=spunet_v1m1 data.root=DIR``), and its classifier must predict the data's classes
    (:func:`ppkt.training.foreign.foreign_segmentation_module`)."""
    path = Path(ckpt_path)
    foreign = detect_format(read_weights_file(path))
    out = output_dir(out)
    if foreign is None:
        if config is not None or overrides:
            raise ConfigError(
                f"{path}: a ppkt checkpoint carries its own config; --config and key=value overrides are for "
                "Pointcept / SLidR / mmdet3d checkpoints (use --data for other data)"
            )
        module = load_run_checkpoint(SegmentationModule, path, "finetune")
        cfg = module.cfg
    else:
        cfg = load_config(FinetuneConfig, config, overrides)
        print(f"[ppkt] {path}: {foreign.target.network} weights, read as student.name={cfg.student.name!r}")
    if data not in (None, "synthetic"):
        cfg.data.root = str(data)
    splits = load_scene_splits(cfg.data)
    if foreign is not None:
        module = foreign_segmentation_module(path, foreign, cfg, splits.num_classes, splits.class_names)
    scenes = {
        "train": splits.train,
        "val": splits.val,
        "test": splits.test,
        "all": splits.train + splits.val + splits.test,
    }[split]
    if not scenes:
        raise ConfigError(f"{splits.root}: the {split!r} split has no scenes (data.val={cfg.data.val})")
    if splits.num_classes > module.num_classes:
        raise DataError(
            f"{splits.root}: the data has {splits.num_classes} classes but the model of {path} predicts "
            f"{module.num_classes}"
        )
    require_labels(scenes, f"{splits.root} ({split} split)")
    metrics = evaluate_segmentation(module, cfg.data, scenes)
    metrics.update(checkpoint=str(path), data=str(splits.root), split=split)
    write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    return metrics
