"""The PPKT pretraining LightningModule: frozen teacher + UPL (2D), sparse U-Net + head (3D), PPNCE."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.config import PretrainConfig, from_dict, to_dict
from ppkt.data.sample import PairedBatch
from ppkt.distributed import all_true
from ppkt.losses import PPNCELoss, build_loss
from ppkt.models.heads import ProjectionHead
from ppkt.models.student import build_student, sync_batchnorm
from ppkt.models.teachers import build_teacher
from ppkt.models.upl import UpsamplingProjection, sample_pixels
from ppkt.sparse import SparseTensor
from ppkt.training.optim import build_optimizer, trainable, warmup_cosine
from ppkt.training.resume import TRAIN_PAIRS, VAL_PAIRS, derive_seed


class PPKTPretrainModule(L.LightningModule):
    """Pixel-to-point contrastive pretraining of a sparse-conv student.

    ``forward(batch)`` returns ``dict(loss=..., **scalars)``; the training loop logs every key.
    """

    def __init__(self, config: dict[str, Any], in_channels: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        cfg = from_dict(PretrainConfig, config)
        self.cfg = cfg
        self.teacher = build_teacher(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.layers)
        self.upl = UpsamplingProjection(
            self.teacher.out_channels, self.teacher.strides, cfg.upl.dim, cfg.upl.output_stride
        )
        self.student = build_student(cfg.student.name, in_channels, backend=cfg.student.backend)
        sync_batchnorm(self.student, cfg.trainer.sync_batchnorm)  # acts under DDP only
        self.head = ProjectionHead(self.student.out_channels, cfg.upl.dim)
        loss = build_loss(
            cfg.loss.name,
            temperature=cfg.loss.temperature,
            num_pairs=cfg.loss.num_pairs,
            gather_distributed=cfg.loss.gather_distributed,
        )
        assert isinstance(loss, PPNCELoss)
        self.loss = loss
        self.step_losses: list[float] = []

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int) -> PPKTPretrainModule:
        return cls(to_dict(cfg), in_channels)

    # ------------------------------------------------------------------ embeddings
    def point_embeddings(self, batch: PairedBatch, voxels: Tensor | None = None) -> Tensor:
        """``[M, D]`` unit embeddings of every voxel of the batch, or ``[P, D]`` of the voxels ``voxels``
        only (the head is point-wise, so it runs on just the rows that are used)."""
        x = SparseTensor(batch.feats, batch.coords)
        feats = self.student(x)
        return self.head(feats if voxels is None else feats[voxels])

    def teacher_features(self, batch: PairedBatch) -> list[Tensor]:
        """The frozen teacher's multi-scale maps of the batch images — every camera image of every sample,
        ``[ΣV, 3, H, W]``, indexed by ``pair_image`` — (no gradient, eval mode), or the batch's cached maps
        when its loader reads a teacher-feature cache."""
        if batch.teacher_feats is not None:
            return batch.teacher_feats
        self.teacher.eval()
        with torch.no_grad():
            return list(self.teacher(batch.images))

    def pixel_embeddings(
        self, features: list[Tensor], image_size: tuple[int, int], image_index: Tensor, uv: Tensor
    ) -> Tensor:
        """``[P, D]`` unit embeddings (UPL) of pixels ``uv`` of images ``image_index``."""
        if self.cfg.upl.output_stride == 1:  # exact and cheap: no dense full-resolution map
            return self.upl.embed_points(features, image_index, uv, image_size)
        return sample_pixels(self.upl(features, image_size), image_index, uv, image_size)

    def superpixel_embeddings(self, batch: PairedBatch) -> tuple[Tensor, Tensor]:
        """``[S, D]`` point and pixel embeddings pooled over the batch's superpixels (SLidR): the mean of
        the unit embeddings of every pair whose pixel lies in the superpixel, renormalised. The 2D side
        pools the paired pixels (those with a valid depth) rather than every pixel of the superpixel."""
        seg = batch.pair_segment
        if seg is None:
            raise ValueError("loss.superpixels > 0 needs batches with pair_segment (a Superpixels transform)")
        key = batch.pair_image * (int(seg.max()) + 1) + seg
        _, group = torch.unique(key, return_inverse=True)
        n = int(group.max()) + 1
        points = self.point_embeddings(batch, batch.pair_voxel)
        pixels = self.pixel_embeddings(
            self.teacher_features(batch), batch.image_size, batch.pair_image, batch.pair_uv
        )

        def pool(x: Tensor) -> Tensor:
            return F.normalize(x.new_zeros(n, x.shape[1]).index_add_(0, group, x), dim=1)

        return pool(points), pool(pixels)

    def pair_generator(self, stream: int, index: int) -> torch.Generator:
        """The random generator of one step's pair sampling, seeded from ``(trainer.seed, stream, index,
        rank)`` alone: a resumed run samples the pairs of the uninterrupted one."""
        seed = derive_seed(self.cfg.trainer.seed, stream, index, self.global_rank)
        return torch.Generator(device=self.device).manual_seed(seed)

    def forward(self, batch: PairedBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``generator`` draws the sampled pairs (default: torch's global random state)."""
        if self.cfg.loss.superpixels > 0:
            points, pixels = self.superpixel_embeddings(batch)
            idx = self.loss.sample(points.shape[0], points.device, generator)
            points, pixels = points[idx], pixels[idx]
        else:
            idx = self.loss.sample(batch.pair_voxel.shape[0], batch.pair_voxel.device, generator)
            points = self.point_embeddings(batch, batch.pair_voxel[idx])
            features = self.teacher_features(batch)
            pixels = self.pixel_embeddings(
                features, batch.image_size, batch.pair_image[idx], batch.pair_uv[idx]
            )
        # under DDP the logits hold every process's pixels, and loss and top-1 are this process's share of
        # the global means (PPNCELoss.mean)
        logits, target = self.loss.logits(points, pixels)
        loss = self.loss.mean(F.cross_entropy(logits, target, reduction="none"), logits)
        with torch.no_grad():
            top1 = self.loss.mean((logits.argmax(dim=1) == target).float(), logits)
        return {
            "loss": loss,
            "top1": top1,
            "pairs": loss.new_tensor(float(len(idx))),
            "voxels": loss.new_tensor(float(batch.coords.shape[0])),
        }

    # ------------------------------------------------------------------ Lightning hooks
    def reduce(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step's scalars averaged over the processes (one all-reduce): loss and top-1 of the whole
        global batch, ``pairs`` and ``voxels`` per process. The values themselves in one process."""
        values = torch.stack([v.detach().float() for v in out.values()])
        values = self.trainer.strategy.reduce(values, reduce_op="mean")
        return dict(zip(out, values, strict=True))

    def training_step(self, batch: PairedBatch | None, batch_idx: int) -> Tensor | None:
        if batch is None or batch.pair_voxel.shape[0] < 2:
            return None
        out = self(batch, self.pair_generator(TRAIN_PAIRS, self.global_step))
        bs = batch.batch_size
        for k, v in self.reduce(out).items():  # already reduced over the processes: no sync_dist
            self.log(f"train/{k}", v, prog_bar=k in ("loss", "top1"), batch_size=bs)
            if k == "loss":
                self.step_losses.append(float(v))
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)  # type: ignore[union-attr]
        return out["loss"]

    def validation_step(self, batch: PairedBatch | None, batch_idx: int) -> None:
        if batch is None or batch.pair_voxel.shape[0] < 2:
            return
        out = self(batch, self.pair_generator(VAL_PAIRS, batch_idx))
        for k, v in out.items():
            self.log(f"val/{k}", v, batch_size=batch.batch_size, sync_dist=True)

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        params = trainable([self.student, self.head, self.upl])
        opt = build_optimizer(o.name, params, o.lr, o.weight_decay, o.momentum)
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, o.warmup_steps, o.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """The batch on ``device``, or ``None`` (Lightning skips the step) when it has fewer than 2 pairs
        (its frames were skipped as bad) — under DDP, on any process: the processes skip a batch together,
        as one left out would leave the others waiting in the step's collectives."""
        if not isinstance(batch, PairedBatch | None):
            return batch
        usable = all_true(batch is not None and batch.pair_voxel.shape[0] >= 2, device)
        return batch.to(device) if usable and batch is not None else None
