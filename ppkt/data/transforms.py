"""Joint 2D/3D transforms. Each is a small class with a ``__repr__``; each copies its input sample.

Transforms that move the image (flip, crop/resize) or the points (rotation, scaling) update the
point→pixel pairing in the same call, so the pairing is never stale. Randomness comes from torch's global
generator (seeded per worker by Lightning's ``seed_everything(workers=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ppkt.data.sample import Sample
from ppkt.geometry import rotation_about_axis, voxelize
from ppkt.geometry.voxelize import first_by_priority

#: per-voxel input features :class:`Voxelize` can build (``data.features``)
FEATURES: tuple[str, ...] = ("rgb", "ones", "height")


class Transform:
    """Base class: ``sample -> new sample`` (the input is never modified)."""

    def __call__(self, sample: Sample) -> Sample:
        return self.apply(sample.copy())

    def apply(self, sample: Sample) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


def _compose_view(s: Sample, a: list[list[float]]) -> None:
    """``view ← view · A`` for an affine ``A`` (2 rows) from new to old image pixel coordinates."""
    if s.view is not None:
        m = torch.tensor([*a, [0.0, 0.0, 1.0]], dtype=torch.float64)
        s.view = s.view @ m


class RandomHorizontalFlip(Transform):
    """Mirror the images left–right with probability ``p``: ``u → W − 1 − u``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def apply(self, s: Sample) -> Sample:
        if float(torch.rand(())) >= self.p:
            return s
        W = s.images.shape[-1]
        s.images = s.images.flip(-1)
        s.pair_uv = torch.stack([W - 1 - s.pair_uv[:, 0], s.pair_uv[:, 1]], dim=1)
        _compose_view(s, [[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]])
        return s


class RandomResizedCrop(Transform):
    """Crop a random box of ``scale`` × the image area (output aspect ratio) and resize it to ``size``.

    Pixel centres map as ``u' = (u − x0 + ½)·W'/w − ½``; pairs whose pixel leaves the crop are dropped (the
    points stay). With ``random=False`` the box is the largest centred one of the output aspect ratio (an
    evaluation resize).
    """

    def __init__(self, size: Sequence[int], scale: Sequence[float] = (1.0, 1.0), random: bool = True) -> None:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (H, W) > 0, got {size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.random = random

    def apply(self, s: Sample) -> Sample:
        H, W = s.images.shape[-2:]
        Ho, Wo = self.size
        aspect = Wo / Ho
        if self.random:
            area = self.scale[0] + float(torch.rand(())) * (self.scale[1] - self.scale[0])
            ch = min(H, max(1, round(math.sqrt(area * H * W / aspect))))
        else:
            ch = min(H, round(W / aspect))
        cw = min(W, max(1, round(ch * aspect)))
        if self.random:
            y0 = int(torch.randint(0, H - ch + 1, ()))
            x0 = int(torch.randint(0, W - cw + 1, ()))
        else:
            y0, x0 = (H - ch) // 2, (W - cw) // 2
        crop = s.images[:, :, y0 : y0 + ch, x0 : x0 + cw]
        if (ch, cw) != (Ho, Wo):
            crop = F.interpolate(crop, size=(Ho, Wo), mode="bilinear", align_corners=False, antialias=True)
        s.images = crop.clamp(0.0, 1.0)
        sx, sy = Wo / cw, Ho / ch
        u = (s.pair_uv[:, 0] - x0 + 0.5) * sx - 0.5
        v = (s.pair_uv[:, 1] - y0 + 0.5) * sy - 0.5
        s.pair_uv = torch.stack([u, v], dim=1)
        s.select_pairs((u >= -0.5) & (u < Wo - 0.5) & (v >= -0.5) & (v < Ho - 0.5))
        # inverse of the pixel map above: u = (u' + ½)·w/W' − ½ + x0
        _compose_view(s, [[1 / sx, 0.0, 0.5 / sx - 0.5 + x0], [0.0, 1 / sy, 0.5 / sy - 0.5 + y0]])
        return s


class CropCachedFeatures(Transform):
    """Turn the whole frame's cached teacher maps into the maps of the sample's (augmented) image.

    For every teacher layer of stride ``s`` the output is ``[1, C, ceil(H / s), ceil(W / s)]`` for the
    current image size ``(H, W)``: the centre of output cell ``j`` (image pixel ``(j + ½)s − ½``) is mapped
    through ``view`` to the original frame, then to the cached map, and read with bilinear interpolation —
    the same crop, resize and flip that moved the image and the pairing. A sample without a cache passes
    through unchanged. Put it after the image transforms.
    """

    def apply(self, s: Sample) -> Sample:
        cache = s.teacher_cache
        if cache is None:
            return s
        if s.view is None:
            raise ValueError(f"sample {s.name!r} has cached teacher features but no view transform")
        H, W = s.images.shape[-2:]
        Hf, Wf = cache.frame_size
        Hc, Wc = cache.image_size
        out = []
        for fmap, stride in zip(cache.maps, cache.strides, strict=True):
            ho, wo = -(-H // stride), -(-W // stride)
            hc, wc = fmap.shape[-2:]
            v, u = torch.meshgrid(
                torch.arange(ho, dtype=torch.float64) * stride + (stride - 1) / 2,
                torch.arange(wo, dtype=torch.float64) * stride + (stride - 1) / 2,
                indexing="ij",
            )
            pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(u.numel(), dtype=torch.float64)])
            uo, vo = (s.view @ pix)[:2]  # original-frame pixel coordinates
            # original frame -> cache image pixels -> normalised coordinates of the map (extent wc*s, hc*s)
            gx = ((uo + 0.5) * (Wc / Wf)) / (wc * stride) * 2 - 1
            gy = ((vo + 0.5) * (Hc / Hf)) / (hc * stride) * 2 - 1
            grid = torch.stack([gx, gy], dim=1).reshape(1, ho, wo, 2).float()
            out.append(
                F.grid_sample(fmap.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            )
        s.teacher_feats, s.teacher_cache = out, None
        return s


class RandomRotate(Transform):
    """Rotate the points about coordinate ``axis`` (the up axis) by a uniform angle in ±``max_degrees``."""

    def __init__(self, axis: int = 2, max_degrees: float = 180.0) -> None:
        self.axis = axis
        self.max_degrees = max_degrees

    def apply(self, s: Sample) -> Sample:
        angle = math.radians(self.max_degrees) * (2 * float(torch.rand(())) - 1)
        R = rotation_about_axis(angle, self.axis, dtype=s.points.dtype)
        s.points = s.points @ R.T
        return s


class RandomCrop(Transform):
    """Keep the points inside a random square prism of side ``size`` metres around the up axis (a floor-plan
    crop through the whole height), centred on a random point of the sample.

    For scene-level segmentation only (samples without image pairs): training on crops makes each step
    cheaper and shows the network partial rooms, as a camera does. Labels follow their points.
    """

    def __init__(self, size: float, up_axis: int = 2) -> None:
        if size <= 0:
            raise ValueError(f"crop size must be > 0 metres, got {size}")
        self.size = float(size)
        self.up_axis = up_axis

    def apply(self, s: Sample) -> Sample:
        if s.pair_point.numel():
            raise ValueError(f"RandomCrop is for scene samples without image pairs; {s.name!r} has pairs")
        n = s.points.shape[0]
        if n == 0:
            return s
        plane = [a for a in range(3) if a != self.up_axis]
        centre = s.points[int(torch.randint(0, n, ())), plane]
        keep = ((s.points[:, plane] - centre).abs() <= self.size / 2).all(dim=1)
        s.points, s.colors = s.points[keep], s.colors[keep]
        if s.labels is not None:
            s.labels = s.labels[keep]
        return s


class RandomColorDrop(Transform):
    """With probability ``p`` replace the points' colours by mid-grey (an ``rgb`` feature of 0): the 3D
    network must then explain the teacher's features from geometry alone. The images are untouched."""

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"color_drop must be a probability in [0, 1], got {p}")
        self.p = p

    def apply(self, s: Sample) -> Sample:
        if float(torch.rand(())) < self.p:
            s.colors = torch.full_like(s.colors, 0.5)
        return s


class ColorJitter(Transform):
    """Chromatic augmentation of the points' colours, drawn once per sample: a random order of the r, g, b
    channels (``permute``), a per-channel contrast factor from ``[1 − gain, 1 + gain]`` about the sample's
    mean colour plus an offset from ``[−shift, shift]``, then, with probability ``gray``, the grey value
    (channel mean) in all three channels; clamped to ``[0, 1]``. Geometry, labels and images are untouched.

    It keeps a network from reading the class off the absolute colour where colour is not a class cue (the
    synthetic rooms draw every surface's texture from one shared pool), in the spirit of the chromatic
    augmentations of MinkowskiNet's indoor recipes."""

    def __init__(
        self, permute: bool = False, gain: float = 0.4, shift: float = 0.2, gray: float = 0.2
    ) -> None:
        for name, value in (("gain", gain), ("shift", shift), ("gray", gray)):
            if not 0 <= value <= 1:
                raise ValueError(f"color jitter {name} must be in [0, 1], got {value}")
        self.permute, self.gain, self.shift, self.gray = permute, gain, shift, gray

    def apply(self, s: Sample) -> Sample:
        c = s.colors.float()
        if self.permute:
            c = c[:, torch.randperm(3)]
        if self.gain > 0 or self.shift > 0:
            gain = 1 + self.gain * (torch.rand(3) * 2 - 1)
            shift = self.shift * (torch.rand(3) * 2 - 1)
            mean = c.mean(0, keepdim=True) if len(c) else torch.zeros(1, 3)
            c = (c - mean) * gain + mean + shift
        if self.gray > 0 and float(torch.rand(())) < self.gray:
            c = c.mean(1, keepdim=True).expand_as(c)
        s.colors = c.clamp(0, 1).contiguous()
        return s


class Superpixels(Transform):
    """SLIC superpixels of each image (SLidR, Sautier et al. 2022): ``pair_segment`` = the superpixel of
    each pair's pixel. Apply it first, while the images and the pairing are the original frame's: the
    segments are then a property of the frame, and later image transforms keep ``pair_segment`` valid.

    The segmentation of a frame is computed once and remembered (by sample name and image size), since SLIC
    costs ~60 ms per 240×320 image on a CPU core.
    """

    def __init__(self, n_segments: int = 150, compactness: float = 10.0) -> None:
        if n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {n_segments}")
        self.n_segments = n_segments
        self.compactness = compactness
        self._memo: dict[tuple[str, int, int, int], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"Superpixels(n_segments={self.n_segments}, compactness={self.compactness})"

    def segments(self, image: torch.Tensor) -> torch.Tensor:
        """``[H, W]`` int64 SLIC labels (from 0) of one ``[3, H, W]`` image in ``[0, 1]``."""
        from skimage.segmentation import slic  # optional dependency: ppkt[superpixels]

        rgb = image.permute(1, 2, 0).double().numpy()
        labels = slic(rgb, n_segments=self.n_segments, compactness=self.compactness, start_label=0)
        return torch.from_numpy(labels).long()

    def apply(self, s: Sample) -> Sample:
        V, _, H, W = s.images.shape
        maps = []
        for i in range(V):
            key = (s.name, i, H, W)
            if not s.name or key not in self._memo:
                seg = self.segments(s.images[i])
                if s.name:
                    self._memo[key] = seg.to(torch.int16 if int(seg.max()) < 2**15 else torch.int64)
                maps.append(seg)
            else:
                maps.append(self._memo[key].long())
        u = s.pair_uv[:, 0].round().long().clamp(0, W - 1)
        v = s.pair_uv[:, 1].round().long().clamp(0, H - 1)
        seg = torch.stack(maps)  # [V, H, W]
        s.pair_segment = seg[s.pair_image, v, u]
        return s


class RandomScale(Transform):
    """Scale the points by a uniform factor in ``[low, high]``."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        self.low, self.high = low, high

    def apply(self, s: Sample) -> Sample:
        s.points = s.points * (self.low + float(torch.rand(())) * (self.high - self.low))
        return s


class Voxelize(Transform):
    """Voxelize the points and reduce the pairing to at most one (random) pair per voxel.

    Voxel coordinates are shifted so the sample's smallest is 0 (a translation: the networks are
    translation-equivariant, and the packed keys stay small).

    Features per voxel (concatenated in the given order): ``rgb`` (mean colour − ½), ``ones``, ``height``
    (mean coordinate along ``up_axis``, metres, relative to the sample's lowest point).
    """

    def __init__(self, voxel_size: float, features: Sequence[str] = ("rgb",), up_axis: int = 2) -> None:
        bad = [f for f in features if f not in FEATURES]
        if bad or not features:
            raise ValueError(f"unknown voxel features {bad}; choose from {list(FEATURES)}")
        self.voxel_size = voxel_size
        self.features = tuple(features)
        self.up_axis = up_axis

    @property
    def num_features(self) -> int:
        return sum(3 if f == "rgb" else 1 for f in self.features)

    def apply(self, s: Sample) -> Sample:
        vox = voxelize(s.points, self.voxel_size)
        M = vox.coords.shape[0]
        counts = vox.counts.to(s.points.dtype).unsqueeze(1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(M, x.shape[1], dtype=x.dtype)
            return out.index_add_(0, vox.inverse, x) / counts

        parts = []
        for f in self.features:
            if f == "rgb":
                parts.append(mean(s.colors.float()) - 0.5)
            elif f == "ones":
                parts.append(torch.ones(M, 1))
            else:
                up = s.points[:, self.up_axis : self.up_axis + 1]
                parts.append(mean(up - up.min()) if len(up) else torch.zeros(M, 1))
        coords = vox.coords - vox.coords.min(dim=0).values if M else vox.coords  # non-negative grid
        s.coords, s.inverse, s.feats = coords, vox.inverse, torch.cat(parts, dim=1).float()
        pv = vox.inverse[s.pair_point]
        uniq, group = torch.unique(pv, return_inverse=True)
        chosen = first_by_priority(group, torch.rand(pv.shape[0], dtype=torch.float64), uniq.shape[0])
        s.select_pairs(chosen)
        s.pair_voxel = uniq
        return s
