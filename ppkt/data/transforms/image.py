"""Image transforms of paired samples: each moves the images, the pairing's pixels and the intrinsics
together (:meth:`~ppkt.data.sample.PairedSample.transform_pixels`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ppkt.data.sample import PairedSample
from ppkt.data.transforms.base import Transform


def _affines(
    scale_u: torch.Tensor, shift_u: torch.Tensor, scale_v: torch.Tensor, shift_v: torch.Tensor
) -> torch.Tensor:
    """``[V, 3, 3]`` float64 affine pixel maps ``u' = scale_u·u + shift_u``, ``v' = scale_v·v + shift_v``."""
    a = torch.zeros(scale_u.shape[0], 3, 3, dtype=torch.float64)
    a[:, 0, 0], a[:, 0, 2] = scale_u, shift_u
    a[:, 1, 1], a[:, 1, 2] = scale_v, shift_v
    a[:, 2, 2] = 1.0
    return a


class RandomHorizontalFlip(Transform[PairedSample]):
    """Mirror each image left–right with probability ``p``, independently per image: ``u → W − 1 − u`` for
    the pairs of a flipped image."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def apply(self, s: PairedSample) -> PairedSample:
        V, W = s.images.shape[0], s.images.shape[-1]
        flip = torch.rand(V) < self.p
        if not bool(flip.any()):
            return s
        images = s.images.clone()
        images[flip] = s.images[flip].flip(-1)
        s.images = images
        u = torch.where(flip[s.pair_image], W - 1 - s.pair_uv[:, 0], s.pair_uv[:, 0])
        s.pair_uv = torch.stack([u, s.pair_uv[:, 1]], dim=1)
        f = flip.to(torch.float64)
        one = torch.ones(V, dtype=torch.float64)
        a = _affines(1 - 2 * f, f * (W - 1.0), one, torch.zeros(V, dtype=torch.float64))
        s.transform_pixels(a, a)  # a flip is its own inverse
        return s


class RandomResizedCrop(Transform[PairedSample]):
    """Crop a random box of ``scale`` × the image area (output aspect ratio) out of each image, independently
    per image, and resize it to ``size``.

    Pixel centres map as ``u' = (u − x0 + ½)·W'/w − ½``; pairs whose pixel leaves their image's crop are
    dropped (the points stay). With ``random=False`` the box is the largest centred one of the output aspect
    ratio (an evaluation resize), the same for every image.
    """

    def __init__(self, size: Sequence[int], scale: Sequence[float] = (1.0, 1.0), random: bool = True) -> None:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (H, W) > 0, got {size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.random = random

    def box(self, H: int, W: int) -> tuple[int, int, int, int]:
        """``(y0, x0, h, w)`` of one crop box in an ``H × W`` image."""
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
        return y0, x0, ch, cw

    def apply(self, s: PairedSample) -> PairedSample:
        V, _, H, W = s.images.shape
        Ho, Wo = self.size
        boxes = [self.box(H, W) for _ in range(V)]
        crops = []
        for i, (top, left, ch, cw) in enumerate(boxes):
            crop = s.images[i : i + 1, :, top : top + ch, left : left + cw]
            if (ch, cw) != (Ho, Wo):
                crop = F.interpolate(
                    crop, size=(Ho, Wo), mode="bilinear", align_corners=False, antialias=True
                )
            crops.append(crop)
        s.images = torch.cat(crops).clamp(0.0, 1.0)
        b = torch.tensor(boxes, dtype=torch.float64)  # [V, 4]: y0, x0, h, w
        y0, x0, sy, sx = b[:, 0], b[:, 1], Ho / b[:, 2], Wo / b[:, 3]
        k = s.pair_image
        u = (s.pair_uv[:, 0] - x0[k].to(s.pair_uv.dtype) + 0.5) * sx[k].to(s.pair_uv.dtype) - 0.5
        v = (s.pair_uv[:, 1] - y0[k].to(s.pair_uv.dtype) + 0.5) * sy[k].to(s.pair_uv.dtype) - 0.5
        s.pair_uv = torch.stack([u, v], dim=1)
        s.select_pairs((u >= -0.5) & (u < Wo - 0.5) & (v >= -0.5) & (v < Ho - 0.5))
        # u' = (u − x0 + ½)·sx − ½, and back: u = (u' + ½)/sx − ½ + x0
        s.transform_pixels(
            _affines(sx, (0.5 - x0) * sx - 0.5, sy, (0.5 - y0) * sy - 0.5),
            _affines(1 / sx, 0.5 / sx - 0.5 + x0, 1 / sy, 0.5 / sy - 0.5 + y0),
        )
        return s


class Superpixels(Transform[PairedSample]):
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

    def apply(self, s: PairedSample) -> PairedSample:
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
