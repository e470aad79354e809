"""Teacher-feature transforms: attach a frame's cached teacher maps, and move them like the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppkt.data.sample import PairedSample
from ppkt.data.transforms.base import Transform
from ppkt.data.types import CachedFeatures, FeatureStore
from ppkt.errors import DataError


class AttachCachedFeatures(Transform[PairedSample]):
    """Give a sample read from frames ``sample.sources`` (one per image) the cached teacher maps of its
    images (``teacher_cache``: image ``v``'s are those of camera ``sample.cameras[v]`` of frame
    ``sample.sources[v]``, or of that frame's single image without cameras, stacked in image order) and an
    identity ``view`` per image; put it before the image transforms. A frame or camera missing from the
    cache (or whose files changed since) is a :class:`~ppkt.errors.DataError`: fill the cache first."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"AttachCachedFeatures(root={str(self.store.root)!r})"

    def apply(self, s: PairedSample) -> PairedSample:
        if len(s.sources) != s.images.shape[0]:
            raise ValueError(
                f"sample {s.name!r} does not know the frame of each image (sources), so it has no cached "
                "features"
            )
        images = []
        for v, ref in enumerate(s.sources):
            camera = None if s.cameras is None else [s.cameras[v]]
            cached = self.store.load(ref.folder, ref.index, camera)
            if cached is None:
                cam = "" if camera is None else f" camera {camera[0]}"
                raise DataError(
                    f"{ref.folder.root}: frame {ref.name}{cam} is not in the teacher-feature cache "
                    f"{self.store.root} (or its files changed); run `ppkt cache-features` first"
                )
            images.append(cached)
        first = images[0]
        if any((c.image_size, c.frame_size) != (first.image_size, first.frame_size) for c in images):
            raise DataError(f"sample {s.name!r}: its frames' cached teacher maps differ in size")
        maps = [torch.cat(level) for level in zip(*(c.maps for c in images), strict=True)]
        s.teacher_cache = CachedFeatures(maps, first.strides, first.image_size, first.frame_size)
        s.view = torch.eye(3, dtype=torch.float64).repeat(s.images.shape[0], 1, 1)
        return s


class CropCachedFeatures(Transform[PairedSample]):
    """Turn the whole images' cached teacher maps into the maps of the sample's (augmented) images.

    For every teacher layer of stride ``s`` the output is ``[V, C, ceil(H / s), ceil(W / s)]`` for the
    current image size ``(H, W)``: the centre of output cell ``j`` of image ``v`` (pixel ``(j + ½)s − ½``) is
    mapped through ``view[v]`` to the original image, then to its cached map, and read with bilinear
    interpolation — the same crop, resize and flip that moved the image and the pairing. A sample without a
    cache passes through unchanged. Put it after the image transforms.
    """

    def apply(self, s: PairedSample) -> PairedSample:
        cache = s.teacher_cache
        if cache is None:
            return s
        if s.view is None:
            raise ValueError(f"sample {s.name!r} has cached teacher features but no view transform")
        V, _, H, W = s.images.shape
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
            orig = s.view.reshape(-1, 3, 3).expand(V, 3, 3) @ pix  # [V, 3, ho·wo] original-image pixels
            uo, vo = orig[:, 0], orig[:, 1]
            # original image -> cache image pixels -> normalised coordinates of the map (extent wc*s, hc*s)
            gx = ((uo + 0.5) * (Wc / Wf)) / (wc * stride) * 2 - 1
            gy = ((vo + 0.5) * (Hc / Hf)) / (hc * stride) * 2 - 1
            grid = torch.stack([gx, gy], dim=-1).reshape(V, ho, wo, 2).float()
            out.append(
                F.grid_sample(fmap.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            )
        s.teacher_feats, s.teacher_cache = out, None
        return s
