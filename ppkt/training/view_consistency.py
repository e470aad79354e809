"""View consistency: does a voxel get the same student feature whichever view of the scene it is seen in?

A student that reproduces view-dependent teacher features can only do so by reading the viewpoint from the
single-frame point density; fine-tuning then sees fused scenes with another density. This check measures
it, on the pretext check's frames (the held-out frames, or the frames ``ppkt evaluate --task retrieval``
scores):

* every frame is back-projected into **world** coordinates, untouched by any augmentation, and its points
  voxelized on the world grid of ``data.voxel_size`` (voxel ``floor(p / voxel_size)``, per-voxel input
  features as in training); the scene's **fused** cloud is the one fine-tuning trains on
  (:func:`~ppkt.data.fusion.load_or_fuse`: every ``data.frame_skip``-th frame of the scene fused at
  ``fuse_voxel_size``, or the annotated mesh of a ScanNet scene that has one), voxelized the same way;
* every input of one scene is given to the student in the same grid position (its voxel keys minus one
  origin per scene), so the strided convolutions see the same voxel alignment in each;
* the embedding is the **student's output feature** (the U-Net's last layer: what the segmentation head and
  the linear probe read, before any projection head), compared by cosine similarity;
* ``view_consistency_frames``: for each pair of **consecutive** evaluated frames of the same scene (in
  trajectory order), the mean cosine similarity over the voxels seen in both (pairs sharing fewer than
  ``min_common`` voxels are left out), averaged over the pairs;
* ``view_consistency_scene``: for each evaluated frame, the mean cosine similarity between each of its
  voxels' feature from that frame alone and from the fused scene, over the voxels the two share, averaged
  over the frames.

1 means every voxel's feature is the same in every view; a network that reads only each voxel's own colour
scores 1 (when the colour of a voxel is the same in every view).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.config import PretrainConfig
from ppkt.config.finetune import SegDataConfig
from ppkt.data.frame_dataset import source_cameras
from ppkt.data.fusion import load_or_fuse
from ppkt.data.pairing import frame_to_sample
from ppkt.data.sample import PointSample
from ppkt.data.transforms import Voxelize
from ppkt.data.types import FrameRef
from ppkt.geometry import pack_keys
from ppkt.sparse import SparseTensor
from ppkt.training.pretrain_module import PPKTPretrainModule

#: ``(feats [M, C], coords [M, 4] (batch, x, y, z)) → [M, D]`` per-voxel features
Embed = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ViewConsistency:
    """The two figures (NaN when nothing could be compared) and what they were computed on."""

    frames: float
    scene: float
    frame_pairs: int
    frames_scored: int
    voxels_frames: int
    voxels_scene: int

    def as_metrics(self, suffix: str = "") -> dict[str, float | int]:
        return {
            f"view_consistency_frames{suffix}": self.frames,
            f"view_consistency_scene{suffix}": self.scene,
        }


@dataclass
class _Input:
    keys: Tensor  # [M, 3] int64 world voxel keys
    feats: Tensor  # [M, C]


def _voxel_input(sample: PointSample, voxelize: Voxelize[PointSample]) -> _Input:
    out = voxelize(sample.copy())
    assert out.coords is not None and out.feats is not None
    # Voxelize shifts its coordinates so the smallest is 0: undo it to get the world keys
    origin = torch.floor(sample.points / voxelize.voxel_size).long().min(dim=0).values  # as voxelize does
    return _Input(out.coords.long() + origin, out.feats)


def _match(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``ia``, ``ib`` with ``a[ia] == b[ib]``: the voxels two inputs share (keys unique in each)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    keys = pack_keys(torch.cat([a, b]))
    ka, kb = keys[: a.shape[0]], keys[a.shape[0] :]
    sorted_b, order = torch.sort(kb)
    pos = torch.searchsorted(sorted_b, ka).clamp(max=sorted_b.shape[0] - 1)
    hit = sorted_b[pos] == ka
    return hit.nonzero().squeeze(1), order[pos[hit]]


def _mean_cosine(fa: Tensor, fb: Tensor) -> float:
    return float(F.cosine_similarity(fa.double(), fb.double(), dim=1).mean())


@torch.no_grad()
def view_consistency(
    embed: Embed,
    frames: Sequence[tuple[str, PointSample]],
    scenes: dict[str, PointSample],
    voxelize: Voxelize[PointSample],
    min_common: int = 20,
) -> ViewConsistency:
    """The two figures of the module docstring for ``embed``.

    Args:
        embed: per-voxel features of one input (a single sample: batch column 0).
        frames: ``(scene name, frame's world points and colours)`` in trajectory order.
        scenes: the fused cloud of each scene named in ``frames`` (a scene missing here only scores pairs).
        voxelize: the training voxelization (voxel size, input features, up axis).
        min_common: frame pairs sharing fewer voxels are left out.
    """
    by_scene: dict[str, list[_Input]] = {}
    for name, sample in frames:
        by_scene.setdefault(name, []).append(_voxel_input(sample, voxelize))
    pair_scores: list[float] = []
    scene_scores: list[float] = []
    voxels_frames = voxels_scene = 0
    for name, inputs in by_scene.items():
        fused = _voxel_input(scenes[name], voxelize) if name in scenes else None
        everything = [*inputs, *([fused] if fused is not None else [])]
        origin = torch.cat([x.keys for x in everything]).min(dim=0).values  # one grid position per scene

        def features(x: _Input, origin: Tensor = origin) -> Tensor:
            coords = torch.cat([torch.zeros(len(x.keys), 1, dtype=torch.long), x.keys - origin], dim=1)
            return embed(x.feats, coords.int())

        embedded = [features(x) for x in inputs]
        for (a, fa), (b, fb) in zip(zip(inputs, embedded), zip(inputs[1:], embedded[1:])):
            ia, ib = _match(a.keys, b.keys)
            if len(ia) >= min_common:
                pair_scores.append(_mean_cosine(fa[ia], fb[ib]))
                voxels_frames += len(ia)
        if fused is None:
            continue
        ff = features(fused)
        for x, fx in zip(inputs, embedded):
            ix, isc = _match(x.keys, fused.keys)
            if len(ix) >= min_common:
                scene_scores.append(_mean_cosine(fx[ix], ff[isc]))
                voxels_scene += len(ix)

    def mean(v: list[float]) -> float:
        return sum(v) / len(v) if v else float("nan")

    return ViewConsistency(
        mean(pair_scores),
        mean(scene_scores),
        len(pair_scores),
        len(scene_scores),
        voxels_frames,
        voxels_scene,
    )


def student_embed(module: PPKTPretrainModule) -> Embed:
    """The student's output features (eval mode: BatchNorm with its running statistics)."""

    def embed(feats: Tensor, coords: Tensor) -> Tensor:
        module.eval()
        device = module.device
        return module.student(SparseTensor(feats.to(device), coords.to(device))).cpu()

    return embed


@dataclass
class ConsistencyData:
    """The world-coordinate frames and fused scenes a check scores (read once, shared by every network)."""

    frames: list[tuple[str, PointSample]]
    scenes: dict[str, PointSample]


def consistency_data(
    refs: Sequence[FrameRef],
    *,
    min_depth: float,
    max_depth: float,
    frame_skip: int,
    fuse_voxel_size: float,
    cache_dir: str | None,
) -> ConsistencyData:
    """The frames ``refs`` (back-projected into the world, no augmentation) and the fused cloud of each
    of their scenes, as fine-tuning fuses it (through the fused-scene cache)."""
    frames: list[tuple[str, PointSample]] = []
    scenes: dict[str, PointSample] = {}
    for ref in refs:
        s = frame_to_sample(ref.folder.read(ref.index), min_depth=min_depth, max_depth=max_depth)
        frames.append((ref.folder.scene, PointSample(points=s.points, colors=s.colors)))
        if ref.folder.scene not in scenes:
            fused = load_or_fuse(
                ref.folder,
                voxel_size=fuse_voxel_size,
                frame_skip=frame_skip,
                min_depth=min_depth,
                max_depth=max_depth,
                cache_dir=cache_dir,
            )
            scenes[ref.folder.scene] = PointSample(
                points=torch.from_numpy(fused.xyz), colors=torch.from_numpy(fused.rgb)
            )
    return ConsistencyData(frames, scenes)


def module_consistency(module: PPKTPretrainModule, data: ConsistencyData) -> ViewConsistency:
    """:func:`view_consistency` of a pretraining module's student on ``data`` (its own voxelization)."""
    d = module.cfg.data
    was_training = module.training
    voxelize: Voxelize[PointSample] = Voxelize(d.voxel_size, d.features, d.up_axis)
    result = view_consistency(student_embed(module), data.frames, data.scenes, voxelize)
    module.train(was_training)
    return result


def consistency_metrics(
    cfg: PretrainConfig, frames: list[FrameRef], trained: PPKTPretrainModule, random_init: PPKTPretrainModule
) -> dict[str, Any]:
    """``view_consistency_frames`` / ``_scene`` of the trained and the random-init student on ``frames``
    (:mod:`ppkt.training.view_consistency`; the scenes fused as ``ppkt finetune`` fuses them by default).
    Empty for LiDAR scans (no RGB-D frames to fuse)."""
    if any(source_cameras(f.folder) is not None for f in frames):
        return {}
    data = consistency_data(
        frames,
        min_depth=cfg.data.min_depth,
        max_depth=cfg.data.max_depth,
        frame_skip=cfg.data.frame_skip,
        fuse_voxel_size=SegDataConfig().fuse_voxel_size,
        cache_dir=cfg.data.cache_dir,
    )
    ours = module_consistency(trained, data)
    return {
        **ours.as_metrics(),
        **module_consistency(random_init, data).as_metrics("_random_init"),
        "view_consistency_pairs": ours.frame_pairs,
        "view_consistency_frames_scored": ours.frames_scored,
    }
