"""Semantic segmentation with the pretraining student + a new linear head (fine-tuning or linear probing)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from ppkt.config import FinetuneConfig, from_dict
from ppkt.data.sample import PointBatch
from ppkt.data.segmentation import voxel_labels
from ppkt.errors import WeightsError
from ppkt.export import import_student_weights
from ppkt.losses.lovasz import lovasz_softmax
from ppkt.models.heads import SegmentationHead
from ppkt.models.state import check_state_dict
from ppkt.models.student import build_student
from ppkt.sparse import SparseTensor
from ppkt.training.common import read_checkpoint
from ppkt.training.optim import build_optimizer, warmup_cosine

IGNORE = -1


def iou_from_confusion(cm: Tensor) -> tuple[Tensor, Tensor, float]:
    """Per-class IoU (NaN for classes absent from ground truth), mIoU over present classes, accuracy."""
    cm = cm.double()
    tp = cm.diag()
    gt, pred = cm.sum(1), cm.sum(0)
    iou = tp / (gt + pred - tp).clamp(min=1)
    iou[gt == 0] = float("nan")
    present = ~torch.isnan(iou)
    miou = iou[present].mean() if present.any() else torch.tensor(float("nan"))
    acc = float(tp.sum() / cm.sum().clamp(min=1))
    return iou, miou, acc


def load_pretrained_student(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The ``student.*`` weights and the config of a ``ppkt pretrain`` checkpoint."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    student = {k[len("student.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("student.")}
    if not student:
        raise WeightsError(
            f"{path}: checkpoint holds no 'student.*' weights (not a ppkt pretrain checkpoint?)"
        )
    hp = ckpt.get("hyper_parameters", {})
    return student, hp


class SegmentationModule(L.LightningModule):
    """Student (optionally pretrained, optionally frozen) + linear head; cross-entropy (+ Lovász-softmax)
    on voxels."""

    def __init__(
        self, config: dict[str, Any], in_channels: int, num_classes: int, class_names: list[str]
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = from_dict(FinetuneConfig, config)
        self.class_names = class_names
        self.num_classes = num_classes
        self.student = build_student(self.cfg.student.name, in_channels, backend=self.cfg.student.backend)
        self.head = SegmentationHead(self.student.out_channels, num_classes)
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)
        #: cross-entropy class weights (``class_weights: inverse_sqrt``), set from the labelled training
        #: points by :meth:`set_class_weights`; training-only, so not saved in checkpoints
        self.class_weights: Tensor
        self.register_buffer("class_weights", torch.ones(num_classes), persistent=False)
        if self.cfg.probe:
            self.student.requires_grad_(False)

    def set_class_weights(self, counts: Tensor) -> None:
        """``class_weights: inverse_sqrt``: weight ``1/√n_c`` for the ``n_c`` labelled points of class ``c``
        (classes without labelled points get weight 0; they never occur as targets). The mean of the
        weighted cross-entropy divides by the targets' summed weight, so only the ratios matter."""
        if counts.shape != (self.num_classes,):
            raise ValueError(f"expected {self.num_classes} class counts, got shape {tuple(counts.shape)}")
        c = counts.double()
        w = torch.where(c > 0, c.clamp(min=1).rsqrt(), torch.zeros_like(c))
        self.class_weights.copy_((w / w[c > 0].mean() if bool((c > 0).any()) else w).float())

    def load_backbone(self, path: str | Path) -> None:
        # Pointcept / MinkUNet34C (SLidR) weights: converted by ppkt.export (None for a ppkt checkpoint)
        foreign = import_student_weights(path, self.student, self.cfg.student.name)
        if foreign is not None:
            self.student.load_state_dict(foreign, strict=True)
            return
        weights, hp = load_pretrained_student(path)
        pre_cfg = hp.get("config", {})
        pre = pre_cfg.get("student", {}).get("name")
        if pre is not None and pre != self.cfg.student.name:
            raise WeightsError(
                f"{path}: pretrained student is {pre!r} but student.name={self.cfg.student.name!r}"
            )
        pre_features = pre_cfg.get("data", {}).get("features")
        if pre_features is not None and list(pre_features) != list(self.cfg.data.features):
            raise WeightsError(
                f"{path}: the student was pretrained on input features {list(pre_features)} but "
                f"data.features={list(self.cfg.data.features)} (set them equal)"
            )
        pre_voxel = pre_cfg.get("data", {}).get("voxel_size")
        if pre_voxel is not None and not math.isclose(pre_voxel, self.cfg.data.voxel_size):
            warnings.warn(
                f"{path}: the student was pretrained with data.voxel_size={pre_voxel} but fine-tunes with "
                f"{self.cfg.data.voxel_size}: its filters see another scale",
                stacklevel=2,
            )
        check_state_dict(
            weights,
            self.student.state_dict(),
            what=f"{path}: the pretrained student",
            target=f"student.name={self.cfg.student.name!r} on data.features={list(self.cfg.data.features)}",
        )
        self.student.load_state_dict(weights, strict=True)

    def train(self, mode: bool = True) -> SegmentationModule:
        super().train(mode)
        if self.cfg.probe:
            self.student.eval()  # linear probing: frozen features, BN statistics included
        return self

    def backbone_frozen(self) -> bool:
        """Linear probing, or the head-only first steps of fine-tuning (``optim.head_only_steps``)."""
        if self.cfg.probe:
            return True
        return self.training and self.global_step < self.cfg.optim.head_only_steps

    def forward(self, batch: PointBatch) -> Tensor:
        """Voxel logits ``[M, num_classes]``."""
        x = SparseTensor(batch.feats, batch.coords)
        if self.backbone_frozen():
            # re-asserted every step: Lightning restores train mode per submodule, bypassing train()
            self.student.eval()
            with torch.no_grad():
                feats = self.student(x)
        else:
            self.student.train(self.training)
            feats = self.student(x)
        return self.head(feats)

    def training_step(self, batch: PointBatch, batch_idx: int) -> Tensor | None:
        assert batch.labels is not None
        target = voxel_labels(batch.inverse, batch.labels, batch.coords.shape[0], self.num_classes, IGNORE)
        if not (target != IGNORE).any():
            return None
        logits = self(batch)
        loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE)
        if self.cfg.loss == "ce+lovasz":
            lovasz = lovasz_softmax(logits.softmax(dim=1), target, IGNORE)
            self.log("train/lovasz", lovasz, batch_size=batch.batch_size)
            loss = loss + lovasz
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: PointBatch, batch_idx: int) -> None:
        self.update_confusion(batch)

    def on_validation_epoch_end(self) -> None:
        _, miou, acc = iou_from_confusion(self.confusion.compute())
        self.confusion.reset()
        self.log("val/miou", float(miou) * 100)
        self.log("val/accuracy", acc * 100)

    def update_confusion(self, batch: PointBatch) -> None:
        """Predict voxels, map them back to the original points (inverse map), accumulate."""
        assert batch.labels is not None
        point_pred = self(batch).argmax(dim=1)[batch.inverse]
        self.confusion.update(point_pred, batch.labels)

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        groups = [{"name": "head", "params": list(self.head.parameters()), "lr": o.head_lr}]
        if not self.cfg.probe:
            groups.append({"name": "backbone", "params": list(self.student.parameters()), "lr": o.lr})
        opt = build_optimizer(o.name, groups, o.lr, o.weight_decay, o.momentum)
        total = int(self.trainer.estimated_stepping_batches)
        k = min(o.head_only_steps, total)
        later = warmup_cosine(total - k, o.warmup_steps, o.schedule)
        schedules = {
            "head": warmup_cosine(total, o.warmup_steps, o.schedule),
            # the backbone's schedule starts when it is unfrozen
            "backbone": lambda step: 0.0 if step < k else later(step - k),
        }
        sched = torch.optim.lr_scheduler.LambdaLR(opt, [schedules[g["name"]] for g in opt.param_groups])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, PointBatch) else batch
