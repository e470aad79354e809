"""Learnable upsampling projection layer (UPL) and pixel sampling.

The UPL turns the frozen teacher's multi-scale maps into dense, unit-norm pixel embeddings::

    features[i]  [B, C_i, ceil(H/s_i), ceil(W/s_i)]            (teacher levels, strides s_i)
      -> proj_i: 1x1 conv C_i -> D   (or 1x1 C_i -> hidden -> ReLU -> 1x1 hidden -> D)
      -> bilinear upsampling by s_i / os, cropped to [B, D, ceil(H/os), ceil(W/os)]
      -> sum over levels -> ReLU -> 1x1 conv D -> D -> L2-normalise over channels
    embeddings   [B, D, ceil(H/os), ceil(W/os)]                (os = output_stride)

Geometry convention (shared by everything here): integer pixel coordinates are pixel centres, and cell
``j`` of a map with stride ``s`` covers image pixels ``[j*s, (j+1)*s)``, so its centre is at pixel
``j*s + (s-1)/2``. When H (or W) is not a multiple of ``s`` the last cell extends past the image; we
upsample by the exact factor and crop instead of stretching the map to the image, so all levels and
all output strides agree on where each cell lies.

:func:`sample_pixels` looks up embeddings at full-resolution pixel coordinates ``uv`` [P, 2]
(u = column, v = row) with bilinear interpolation, for any output stride.
:meth:`UpsamplingProjection.embed_points` computes the same per-point embeddings without building the
full-resolution map (exactly equal to ``sample_pixels(forward(...))`` at integer pixels when
``output_stride == 1``) — the cheap path for training on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OUTPUT_STRIDES", "UpsamplingProjection", "sample_levels", "sample_pixels"]

#: Allowed ``output_stride`` values of :class:`UpsamplingProjection`.
OUTPUT_STRIDES: tuple[int, ...] = (1, 2, 4, 8)


def _is_pos_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _points_to_grid(uv: Tensor, extent: tuple[float, float]) -> Tensor:
    """Pixel coordinates [P, 2] (u, v) -> grid_sample coords [P, 2] for a map covering ``extent`` (W, H)
    image pixels (``align_corners=False``: pixel centre u maps to (u + 0.5) / W * 2 - 1)."""
    scale = uv.new_tensor([2.0 / extent[0], 2.0 / extent[1]])
    return (uv + 0.5) * scale - 1.0


def _point_slots(image_index: Tensor, batch: int) -> tuple[Tensor, int]:
    """Padded layout of points grouped by image: returns (flat slot [P] long, Pmax) such that point i
    sits at ``flat[i] = image_index[i] * Pmax + rank of i among the points of its image``."""
    p = image_index.shape[0]
    if p == 0:
        return image_index.new_zeros(0), 0
    counts = torch.bincount(image_index, minlength=batch)
    order = torch.argsort(image_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(image_index)
    rank[order] = torch.arange(p, device=image_index.device) - starts[image_index[order]]
    pmax = int(counts.max())
    return image_index * pmax + rank, pmax


def _gather(maps: Tensor, slots: tuple[Tensor, int], grid: Tensor) -> Tensor:
    """Bilinear lookup of ``maps`` [B, C, h, w] at ``grid`` [P, 2] (normalised x, y, one row per point)
    laid out by :func:`_point_slots`; returns [P, C]. A single ``grid_sample`` over the whole batch
    with a padded [B, 1, Pmax, 2] grid (border padding), no loop over points or images."""
    b, c = maps.shape[:2]
    flat, pmax = slots
    if pmax == 0:
        return maps.new_zeros(0, c)
    padded = maps.new_zeros(b * pmax, 2).index_copy_(0, flat, grid.to(maps.dtype))
    out = F.grid_sample(
        maps, padded.view(b, 1, pmax, 2), mode="bilinear", padding_mode="border", align_corners=False
    )  # [B, C, 1, Pmax]
    return out.view(b, c, pmax).transpose(1, 2).reshape(b * pmax, c).index_select(0, flat)


def _check_points(image_index: Tensor, uv: Tensor, batch: int) -> None:
    if image_index.dim() != 1 or image_index.dtype != torch.long:
        raise ValueError(
            f"image_index must be a 1-D long tensor, got {image_index.dtype} {tuple(image_index.shape)}"
        )
    if uv.shape != (image_index.shape[0], 2) or not uv.is_floating_point():
        raise ValueError(
            f"uv must be a float tensor [P, 2] with P = {image_index.shape[0]}, got {tuple(uv.shape)}"
        )
    if image_index.numel() and (int(image_index.min()) < 0 or int(image_index.max()) >= batch):
        raise ValueError(f"image_index values must lie in [0, {batch}), the batch size of the maps")


def _infer_stride(map_size: tuple[int, int], image_size: tuple[int, int]) -> int:
    """Smallest stride s with ceil(H/s), ceil(W/s) == map size."""
    (h, w), (hh, ww) = map_size, image_size
    for s in range(1, max(hh, ww) + 1):
        if math.ceil(hh / s) == h and math.ceil(ww / s) == w:
            return s
    raise ValueError(
        f"embedding map size {map_size} is not ceil(image_size / s) for any integer stride s "
        f"(image_size {image_size})"
    )


def sample_pixels(
    embeddings: Tensor,
    image_index: Tensor,
    uv: Tensor,
    image_size: tuple[int, int],
    output_stride: int | None = None,
    normalize: bool = True,
) -> Tensor:
    """Bilinearly sample pixel embeddings at full-resolution pixel coordinates.

    Args:
        embeddings: [B, D, h, w] map at stride ``os``: ``h = ceil(H / os)``, ``w = ceil(W / os)``.
        image_index: [P] long, which image of the batch each point belongs to.
        uv: [P, 2] float pixel coordinates (u = column, v = row) in the full-resolution image; integer
            values are pixel centres. Points beyond the outermost cell centres take the border value.
        image_size: (H, W) of the full-resolution image.
        output_stride: stride of ``embeddings``; ``None`` infers the smallest integer consistent with
            the sizes (``os == 1`` when ``(h, w) == image_size``).
        normalize: re-L2-normalise the sampled vectors (default).

    Returns:
        [P, D] embeddings (unit norm when ``normalize``); differentiable w.r.t. ``embeddings``.
    """
    if embeddings.dim() != 4:
        raise ValueError(f"embeddings must be [B, D, h, w], got {tuple(embeddings.shape)}")
    _check_points(image_index, uv, embeddings.shape[0])
    hh, ww = int(image_size[0]), int(image_size[1])
    h, w = embeddings.shape[-2:]
    if output_stride is None:
        output_stride = _infer_stride((h, w), (hh, ww))
    elif (h, w) != (math.ceil(hh / output_stride), math.ceil(ww / output_stride)):
        raise ValueError(
            f"embeddings map size {(h, w)} does not match image_size {(hh, ww)} "
            f"at output_stride {output_stride}"
        )
    # The map covers (w * os, h * os) image pixels (>= W, H): cell j is centred on pixel j*os + (os-1)/2.
    grid = _points_to_grid(uv, (w * output_stride, h * output_stride))
    out = _gather(embeddings, _point_slots(image_index, embeddings.shape[0]), grid)
    return F.normalize(out, dim=1) if normalize else out


def sample_levels(
    features: Sequence[Tensor], strides: Sequence[int], image_index: Tensor, uv: Tensor
) -> Tensor:
    """The raw multi-scale maps sampled at pixels, concatenated: ``[P, Σ C_i]``.

    Each level ``features[i] [B, C_i, h_i, w_i]`` of stride ``strides[i]`` is interpolated bilinearly at
    the full-resolution pixels ``uv [P, 2]`` of images ``image_index [P]`` (the cell-centre convention of
    this module, as :meth:`UpsamplingProjection.embed_points`), with no projection and no normalisation:
    the frozen teacher's own features at each pixel (the target of the distillation loss)."""
    if len(features) != len(strides) or not features:
        raise ValueError(f"expected one stride per feature map, got {len(strides)} for {len(features)}")
    _check_points(image_index, uv, features[0].shape[0])
    slots = _point_slots(image_index, features[0].shape[0])
    out = []
    for x, s in zip(features, strides):
        grid = _points_to_grid(uv, (x.shape[-1] * s, x.shape[-2] * s))
        out.append(_gather(x.float(), slots, grid))
    return torch.cat(out, dim=1)


class UpsamplingProjection(nn.Module):
    """Learnable upsampling projection of multi-scale teacher features to unit-norm pixel embeddings.

    Args:
        in_channels: channels of each teacher level (e.g. ``teacher.out_channels``).
        strides: stride of each teacher level (e.g. ``teacher.strides``); each must be a multiple of
            ``output_stride``.
        out_dim: embedding dimension D.
        output_stride: resolution of the output map, one of :data:`OUTPUT_STRIDES`.
        hidden_dim: if set, each level is projected by 1x1 -> ReLU -> 1x1 through this many channels
            instead of a single 1x1 conv.

    ``forward(features, image_size)`` returns [B, D, ceil(H/os), ceil(W/os)], L2-normalised over D.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        out_dim: int = 64,
        output_stride: int = 1,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        in_channels, strides = list(in_channels), list(strides)
        if not in_channels or not all(_is_pos_int(c) for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {in_channels}")
        if len(strides) != len(in_channels) or not all(_is_pos_int(s) for s in strides):
            raise ValueError(
                f"strides must be positive ints, one per level ({len(in_channels)}), got {strides}"
            )
        if not _is_pos_int(out_dim):
            raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")
        if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
            raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
        if any(s % output_stride for s in strides):
            allowed = [o for o in OUTPUT_STRIDES if all(s % o == 0 for s in strides)]
            raise ValueError(
                f"every level stride {strides} must be a multiple of output_stride {output_stride}; "
                f"allowed output_stride values here: {allowed}"
            )
        if hidden_dim is not None and not _is_pos_int(hidden_dim):
            raise ValueError(f"hidden_dim must be None or a positive int, got {hidden_dim!r}")
        self.in_channels = in_channels
        self.strides = strides
        self.out_dim = out_dim
        self.output_stride = output_stride
        self.hidden_dim = hidden_dim
        self.proj = nn.ModuleList(
            nn.Conv2d(c, out_dim, 1)
            if hidden_dim is None
            else nn.Sequential(
                nn.Conv2d(c, hidden_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, 1)
            )
            for c in in_channels
        )
        self.fuse = nn.Conv2d(out_dim, out_dim, 1)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(ceil(H / os), ceil(W / os)) for ``image_size`` (H, W)."""
        return math.ceil(image_size[0] / self.output_stride), math.ceil(image_size[1] / self.output_stride)

    def _check(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> None:
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        hh, ww = image_size
        for i, (f, c, s) in enumerate(zip(features, self.in_channels, self.strides)):
            want = (features[0].shape[0], c, math.ceil(hh / s), math.ceil(ww / s))
            if tuple(f.shape) != want:
                raise ValueError(
                    f"feature level {i} (stride {s}) must have shape {want} "
                    f"for image_size {tuple(image_size)}, got {tuple(f.shape)}"
                )

    def _projected(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [proj(f) for proj, f in zip(self.proj, features)]

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Dense embeddings [B, D, ceil(H/os), ceil(W/os)] (unit norm over D) from teacher ``features``."""
        self._check(features, image_size)
        ho, wo = self.output_size(image_size)
        fused: Tensor | None = None
        for x, s in zip(self._projected(features), self.strides):
            factor = s // self.output_stride
            if factor > 1:
                # Exact factor then crop: cell j of the level stays centred on pixel j*s + (s-1)/2.
                size = (x.shape[-2] * factor, x.shape[-1] * factor)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = x[..., :ho, :wo]
            fused = x if fused is None else fused + x
        assert fused is not None
        return F.normalize(self.fuse(F.relu(fused)), dim=1)

    def embed_points(
        self, features: Sequence[Tensor], image_index: Tensor, uv: Tensor, image_size: tuple[int, int]
    ) -> Tensor:
        """Unit-norm embeddings [P, D] at pixels ``uv`` [P, 2] (u = column, v = row) of images
        ``image_index`` [P], without materialising the dense map: each projected level is sampled at the
        points, then fused. Equals ``sample_pixels(self(features, image_size), ...)`` at integer pixels
        for ``output_stride == 1`` (and is a finer interpolation otherwise)."""
        self._check(features, image_size)
        _check_points(image_index, uv, features[0].shape[0])
        slots = _point_slots(image_index, features[0].shape[0])  # shared by all levels
        fused: Tensor | None = None
        for x, s in zip(self._projected(features), self.strides):
            grid = _points_to_grid(uv, (x.shape[-1] * s, x.shape[-2] * s))
            sampled = _gather(x, slots, grid)
            fused = sampled if fused is None else fused + sampled
        assert fused is not None
        weight = self.fuse.weight.view(self.out_dim, self.out_dim)
        return F.normalize(F.linear(F.relu(fused), weight, self.fuse.bias), dim=1)
