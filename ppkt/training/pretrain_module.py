"""The PPKT pretraining LightningModule: frozen teacher + UPL (2D), sparse U-Net + heads (3D), the pretext
loss (PPNCE, distillation, or their weighted sum)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.config import PretrainConfig, from_dict, to_dict
from ppkt.data.sample import PairedBatch
from ppkt.data.teacher_input import input_parts
from ppkt.distributed import all_true
from ppkt.geometry.planes import plane_mask
from ppkt.losses import build_pretext_loss
from ppkt.models.heads import ProjectionHead
from ppkt.models.student import build_student, sync_batchnorm
from ppkt.models.teachers import build_teacher
from ppkt.models.upl import UpsamplingProjection, sample_levels, sample_pixels
from ppkt.sparse import SparseTensor
from ppkt.training.optim import build_optimizer, trainable, warmup_cosine
from ppkt.training.resume import INIT, TRAIN_PAIRS, VAL_PAIRS, derive_seed

#: the modules whose random initialisation draws from its own stream (:func:`seeded_init`)
INIT_PARTS: tuple[str, ...] = ("teacher", "upl", "student", "head", "distill_head")


@contextmanager
def seeded_init(seed: int, part: str) -> Iterator[None]:
    """Build module ``part`` (one of :data:`INIT_PARTS`) from its own random stream ``(seed, INIT, part)``,
    leaving the global generator as it was: the student's initial weights depend on ``trainer.seed`` only,
    not on which teacher layers, UPL or loss the run builds before it (a variant changes its variable, not
    the student's init), and a random-init module rebuilt from a run's config is that run's starting point."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, INIT, INIT_PARTS.index(part)))
        yield


def plane_pair_weights(batch: PairedBatch, share: float, generator: torch.Generator | None = None) -> Tensor:
    """``[P]`` sampling weights of the batch's pairs: in every sample, the pairs whose voxel lies on one of
    its dominant planes (:func:`~ppkt.geometry.planes.plane_mask`, one voxel of tolerance) share ``share`` of
    the sample's weight, the others the rest (all of it when a sample has only one kind); every sample keeps
    a weight proportional to its number of pairs."""
    coords = batch.coords
    on = torch.zeros(coords.shape[0], dtype=torch.bool, device=coords.device)
    sample = coords[:, 0].long()
    for b in range(batch.batch_size):
        rows = torch.nonzero(sample == b).squeeze(1)
        on[rows] = plane_mask(coords[rows, 1:].float(), threshold=1.0, generator=generator)
    pair_sample, pair_on = sample[batch.pair_voxel], on[batch.pair_voxel]
    n = batch.batch_size
    pairs = torch.bincount(pair_sample, minlength=n).double()
    planar = torch.bincount(pair_sample[pair_on], minlength=n).double()
    other = pairs - planar
    share_on = torch.where(other == 0, 1.0, torch.where(planar == 0, 0.0, share)).double()
    w_on = share_on * pairs / planar.clamp(min=1)
    w_off = (1 - share_on) * pairs / other.clamp(min=1)
    return torch.where(pair_on, w_on[pair_sample], w_off[pair_sample]).float()


class PPKTPretrainModule(L.LightningModule):
    """Pixel-to-point pretraining of a sparse-conv student: PPNCE, feature distillation, or both.

    The objective (``loss.name``) is a :class:`~ppkt.losses.PretextLoss` whose terms read one of two
    embedding spaces: ``"upl"`` (projection ``head`` of the student against the learnable ``upl``; PPNCE) and
    ``"teacher"`` (``distill_head``, a projection to the teacher's summed channels, against the frozen
    teacher features at each pixel; distillation, which has no negatives and so needs a fixed target). Both
    spaces share the student and the sampled pairs. ``head`` and ``upl`` always exist (checkpoints and
    exports keep their keys) and are frozen when no term reads them; ``distill_head`` exists only when a
    term reads the teacher space.

    ``forward(batch)`` returns ``dict(loss=..., **scalars)``; the training loop logs every key.
    """

    #: set only when a loss term reads the teacher space
    distill_head: ProjectionHead

    def __init__(self, config: dict[str, Any], in_channels: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        cfg = from_dict(PretrainConfig, config)
        self.cfg = cfg
        seed = cfg.trainer.seed
        with seeded_init(seed, "teacher"):
            self.teacher = build_teacher(
                cfg.teacher.name,
                cfg.teacher.weights,
                cfg.teacher.layers,
                inputs=len(input_parts(cfg.data.teacher_input)),
            )
        with seeded_init(seed, "upl"):
            self.upl = UpsamplingProjection(
                self.teacher.out_channels, self.teacher.strides, cfg.upl.dim, cfg.upl.output_stride
            )
        with seeded_init(seed, "student"):
            self.student = build_student(cfg.student.name, in_channels, backend=cfg.student.backend)
        sync_batchnorm(self.student, cfg.trainer.sync_batchnorm)  # acts under DDP only
        with seeded_init(seed, "head"):
            self.head = ProjectionHead(self.student.out_channels, cfg.upl.dim)
        self.loss = build_pretext_loss(
            cfg.loss.name,
            cfg.loss.weights,
            cfg.loss.num_pairs,
            options={
                # the pairs are sampled once for every term (PretextLoss.sample)
                "ppnce": {
                    "temperature": cfg.loss.temperature,
                    "num_pairs": 0,
                    "gather_distributed": cfg.loss.gather_distributed,
                },
                "distill": {"distance": cfg.loss.distance, "gather_distributed": cfg.loss.gather_distributed},
            },
        )
        spaces = self.loss.spaces
        if "teacher" in spaces:
            with seeded_init(seed, "distill_head"):
                self.distill_head = ProjectionHead(self.student.out_channels, sum(self.teacher.out_channels))
        if "upl" not in spaces:  # unused: frozen (DDP needs every trainable parameter to get a gradient)
            self.head.requires_grad_(False)
            self.upl.requires_grad_(False)
        #: the space of the retrieval check: the first term's
        self.retrieval_space = spaces[0]
        self.step_losses: list[float] = []

    @classmethod
    def from_config(cls, cfg: PretrainConfig, in_channels: int) -> PPKTPretrainModule:
        return cls(to_dict(cfg), in_channels)

    # ------------------------------------------------------------------ embeddings
    def student_features(self, batch: PairedBatch, voxels: Tensor | None = None) -> Tensor:
        """``[M, C]`` student output features of every voxel, or ``[P, C]`` of the voxels ``voxels``."""
        feats = self.student(SparseTensor(batch.feats, batch.coords))
        return feats if voxels is None else feats[voxels]

    def project(self, feats: Tensor, space: str | None = None) -> Tensor:
        """Unit point embeddings of student features in ``space`` (default: the retrieval space)."""
        space = space or self.retrieval_space
        return self.head(feats) if space == "upl" else self.distill_head(feats)

    def point_embeddings(
        self, batch: PairedBatch, voxels: Tensor | None = None, space: str | None = None
    ) -> Tensor:
        """``[M, D]`` unit embeddings of every voxel of the batch, or ``[P, D]`` of the voxels ``voxels``
        only (the heads are point-wise, so they run on just the rows that are used)."""
        return self.project(self.student_features(batch, voxels), space)

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
        self,
        features: list[Tensor],
        image_size: tuple[int, int],
        image_index: Tensor,
        uv: Tensor,
        space: str | None = None,
    ) -> Tensor:
        """``[P, D]`` unit embeddings of pixels ``uv`` of images ``image_index`` in ``space``: the UPL's, or
        the teacher's own features (each layer sampled bilinearly, concatenated, normalised)."""
        if (space or self.retrieval_space) == "teacher":
            return F.normalize(sample_levels(features, self.teacher.strides, image_index, uv), dim=1)
        if self.cfg.upl.output_stride == 1:  # exact and cheap: no dense full-resolution map
            return self.upl.embed_points(features, image_index, uv, image_size)
        return sample_pixels(self.upl(features, image_size), image_index, uv, image_size)

    def embed_pairs(
        self, batch: PairedBatch, pairs: Tensor | None, spaces: list[str]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``space → (points [P, D], pixels [P, D])`` of the batch's pairs ``pairs`` (indices; ``None`` =
        all), the student run once for every space."""
        sel = slice(None) if pairs is None else pairs
        feats = self.student_features(batch, batch.pair_voxel[sel])
        features = self.teacher_features(batch)
        image, uv = batch.pair_image[sel], batch.pair_uv[sel]
        return {
            s: (self.project(feats, s), self.pixel_embeddings(features, batch.image_size, image, uv, s))
            for s in spaces
        }

    def pool_superpixels(
        self, batch: PairedBatch, embedded: dict[str, tuple[Tensor, Tensor]]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Every pair's embeddings (of all the batch's pairs) pooled over its superpixel (SLidR): the mean of
        the unit embeddings of the pairs whose pixel lies in the superpixel, renormalised. The 2D side pools
        the paired pixels (those with a valid depth) rather than every pixel of the superpixel."""
        seg = batch.pair_segment
        if seg is None:
            raise ValueError("loss.superpixels > 0 needs batches with pair_segment (a Superpixels transform)")
        key = batch.pair_image * (int(seg.max()) + 1) + seg
        _, group = torch.unique(key, return_inverse=True)
        n = int(group.max()) + 1

        def pool(x: Tensor) -> Tensor:
            return F.normalize(x.new_zeros(n, x.shape[1]).index_add_(0, group, x), dim=1)

        return {s: (pool(p), pool(q)) for s, (p, q) in embedded.items()}

    def superpixel_embeddings(self, batch: PairedBatch, space: str | None = None) -> tuple[Tensor, Tensor]:
        """``[S, D]`` point and pixel embeddings (in ``space``) pooled over the batch's superpixels."""
        space = space or self.retrieval_space
        return self.pool_superpixels(batch, self.embed_pairs(batch, None, [space]))[space]

    def pair_generator(self, stream: int, index: int) -> torch.Generator:
        """The random generator of one step's pair sampling, seeded from ``(trainer.seed, stream, index,
        rank)`` alone: a resumed run samples the pairs of the uninterrupted one."""
        seed = derive_seed(self.cfg.trainer.seed, stream, index, self.global_rank)
        return torch.Generator(device=self.device).manual_seed(seed)

    def forward(self, batch: PairedBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``generator`` draws the sampled pairs (default: torch's global random state). Under DDP the loss
        and its monitors are this process's share of the global means (the loss terms' ``mean``)."""
        spaces = self.loss.spaces
        if self.cfg.loss.superpixels > 0:
            embedded = self.pool_superpixels(batch, self.embed_pairs(batch, None, spaces))
            n = next(iter(embedded.values()))[0].shape[0]
            idx = self.loss.sample(n, batch.pair_voxel.device, generator)
            embedded = {s: (p[idx], q[idx]) for s, (p, q) in embedded.items()}
        else:
            share = self.cfg.loss.plane_share
            weights = None if share is None else plane_pair_weights(batch, share, generator)
            idx = self.loss.sample(batch.pair_voxel.shape[0], batch.pair_voxel.device, generator, weights)
            embedded = self.embed_pairs(batch, idx, spaces)
        out = self.loss(embedded)
        loss = out["loss"]
        return {
            **out,
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

    def extra_heads(self) -> list[nn.Module]:
        """The heads beyond ``head`` that some loss term trains (``distill_head``)."""
        return [self.distill_head] if hasattr(self, "distill_head") else []

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        params = trainable([self.student, self.head, self.upl, *self.extra_heads()])
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
