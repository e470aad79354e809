"""The teacher probe: how well a frozen 2D teacher's pixel features separate the classes, layer by layer.

Pixel-to-point pretraining can hand the 3D student only what the teacher's features at the paired pixels
hold, so a linear classifier on those features — trained on the labelled pixels of some scenes, scored on
other scenes — is the ceiling of what the student's own linear probe can reach, and it tells which teacher
layers carry the classes (``teacher.layers``) and which only texture.

Labels come from each frame's label image or, for a scene labelled as a whole (ScanNet: a class per mesh
vertex), from its labelled cloud projected into the frame and checked against the frame's measured depth
(:mod:`ppkt.data.label_projection`; sparse, exact where set). For every frame, up to ``pixels_per_frame``
labelled pixels of the image resized to the teacher's input
size are drawn (seeded); each layer's map is sampled bilinearly at their centres with the pairing's own
:func:`~ppkt.models.upl.sample_levels` (the distillation target's cell convention) and
L2-normalised per layer; a layer subset's features are concatenated, standardised with the training
pixels' mean and deviation, and a linear softmax classifier with 1/√(class frequency) weights (the
fine-tuning's ``class_weights: inverse_sqrt``) is fit by full-batch Adam. Scores: per-class IoU on the test
pixels (classes absent from them: NaN) and their mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.data.label_projection import project_cloud_labels
from ppkt.data.pairing import resize_image
from ppkt.data.teacher_input import teacher_image
from ppkt.data.types import FrameRef, FusedScene
from ppkt.errors import DataError
from ppkt.models.teachers import Teacher
from ppkt.models.upl import sample_levels
from ppkt.training.seg_module import iou_from_confusion

__all__ = ["PixelFeatures", "ProbeScore", "fit_linear_probe", "pixel_features", "score_probe"]


@dataclass
class PixelFeatures:
    """Sampled pixels: one ``[N, C_i]`` tensor per teacher layer (unit rows) and class ids ``[N]`` (0-based:
    the dataset's class id − 1, unlabelled pixels never drawn)."""

    levels: list[Tensor]
    labels: Tensor

    def columns(self, subset: Sequence[int]) -> Tensor:
        """The features of the layers ``subset`` (indices into ``levels``), concatenated: ``[N, Σ C_i]``."""
        return torch.cat([self.levels[i] for i in subset], dim=1)


@dataclass
class ProbeScore:
    miou: float
    accuracy: float
    per_class_iou: list[float]


def _frame_pixels(
    teacher: Teacher,
    ref: FrameRef,
    image_size: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    clouds: Mapping[str, FusedScene],
    tolerance: float,
    teacher_input: str = "rgb",
    up_axis: int = 2,
) -> tuple[list[Tensor], Tensor]:
    frame = ref.folder.read(ref.index)
    cloud = clouds.get(str(ref.folder.root))
    if cloud is None and frame.label is None:
        raise DataError(
            f"{ref.folder.root}/{ref.folder.frames[ref.index]}: frame has no label image; the teacher probe "
            "needs frames with per-pixel class labels (e.g. <frame>.label.png) or a scene with a labelled "
            "cloud (ScanNet's <scene>_vh_clean_2.labels.ply)"
        )
    H, W = frame.shape
    h, w = image_size
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # the source pixel under each resized pixel's centre (nearest)
    sy = np.minimum(((ys + 0.5) * H / h).astype(np.int64), H - 1)
    sx = np.minimum(((xs + 0.5) * W / w).astype(np.int64), W - 1)
    image = teacher_image(frame, teacher_input, up_axis)
    image, K = resize_image(image, torch.from_numpy(frame.K).to(torch.float64), (h, w))
    if cloud is not None:  # the scene's labelled cloud (ScanNet's mesh) projected straight into the resized
        # image (every point its own resized pixel), checked against the frame's depth
        label = project_cloud_labels(cloud, frame.pose, K.numpy(), frame.depth[sy, sx], tolerance).reshape(-1)
    else:
        assert frame.label is not None
        label = frame.label[sy, sx].reshape(-1)
    candidates = np.flatnonzero(label > 0)
    if candidates.size == 0:
        return [], torch.zeros(0, dtype=torch.long)
    pick = rng.choice(candidates, size=min(n, candidates.size), replace=False)
    uv = torch.from_numpy(np.stack([pick % w, pick // w], axis=1)).float()  # pixel centres (u, v)
    with torch.no_grad():
        maps = teacher(image[None])
        sampled = sample_levels(maps, teacher.strides, torch.zeros(len(pick), dtype=torch.long), uv)
    levels = [F.normalize(x, dim=1) for x in sampled.split(list(teacher.out_channels), dim=1)]
    return levels, torch.from_numpy(label[pick] - 1).long()


def pixel_features(
    teacher: Teacher,
    frames: Sequence[FrameRef],
    image_size: tuple[int, int],
    pixels_per_frame: int,
    seed: int,
    clouds: Mapping[str, FusedScene] | None = None,
    tolerance: float = 0.05,
    teacher_input: str = "rgb",
    up_axis: int = 2,
) -> PixelFeatures:
    """The teacher's features at up to ``pixels_per_frame`` labelled pixels of every frame (see the module
    docstring). A frame whose folder has a labelled cloud in ``clouds`` (keyed by ``str(folder.root)``) takes
    its labels from it (:func:`~ppkt.data.label_projection.project_cloud_labels`, depth agreement within
    ``tolerance`` metres); any other frame needs a label image, or :class:`DataError` names it. The teacher
    sees each frame's ``teacher_input`` image (:func:`~ppkt.data.teacher_input.teacher_image`)."""
    rng = np.random.default_rng(seed)
    clouds = {} if clouds is None else clouds
    per_level: list[list[Tensor]] = [[] for _ in teacher.out_channels]
    labels: list[Tensor] = []
    for ref in frames:
        levels, lab = _frame_pixels(
            teacher, ref, image_size, pixels_per_frame, rng, clouds, tolerance, teacher_input, up_axis
        )
        if lab.numel() == 0:
            continue
        for acc, x in zip(per_level, levels, strict=True):
            acc.append(x)
        labels.append(lab)
    if not labels:
        raise DataError("teacher probe: none of the frames has a labelled pixel")
    return PixelFeatures([torch.cat(x) for x in per_level], torch.cat(labels))


def fit_linear_probe(
    x: Tensor, y: Tensor, num_classes: int, steps: int = 300, lr: float = 1e-2, seed: int = 0
) -> torch.nn.Module:
    """A linear classifier (standardisation folded in) fit to ``x [N, C]`` → ``y [N]`` by full-batch Adam
    on class-weighted cross-entropy (weights 1/√count, mean 1 over the classes present)."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    count = torch.bincount(y, minlength=num_classes).float()
    weight = torch.where(count > 0, count.clamp(min=1).rsqrt(), torch.zeros_like(count))
    weight = weight / weight[count > 0].mean()
    linear = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.Adam(linear.parameters(), lr=lr)
    z = (x - mean) / std
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(linear(z), y, weight=weight).backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the layer: one Linear on raw features
        linear.weight.div_(std)
        linear.bias.sub_(linear.weight @ mean)
    return linear


def score_probe(probe: torch.nn.Module, x: Tensor, y: Tensor, num_classes: int) -> ProbeScore:
    """Per-class IoU (NaN: class absent from ``y``), mIoU over the present classes, accuracy."""
    with torch.no_grad():
        pred = probe(x).argmax(1)
    cm = torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).view(num_classes, -1)
    iou, miou, acc = iou_from_confusion(cm)
    return ProbeScore(float(miou), acc, [float(v) for v in iou])
