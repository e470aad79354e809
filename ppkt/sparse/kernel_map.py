"""Coordinate hashing and cached kernel maps of the pure-PyTorch sparse backend.

Coordinate convention
---------------------
Coordinates are int32 ``[M, 4]`` rows ``(batch, x, y, z)``. At tensor-stride ``s`` they are stored
**divided** by ``s`` ("level coordinates"): a down-sampling conv with stride 2 maps an input site
``i`` to output site ``o`` with ``i = 2 * o + d - padding`` (``d`` the kernel offset), exactly the output
index of ``torch.nn.functional.conv3d(stride=2, padding=padding)`` on a dense grid. A site at stride
``s`` therefore covers the stride-1 voxels ``[s * o, s * o + s)`` along each axis (for ``kernel == stride``).

Hashing
-------
A coordinate row is packed into one int64 key::

    key = batch << 54 | (x + 2**17) << 36 | (y + 2**17) << 18 | (z + 2**17)

so spatial coordinates must lie in ``[-2**17, 2**17)`` (18 signed bits each) and the batch index in
``[0, 512)`` (9 bits); :func:`pack_keys` raises ``ValueError`` otherwise. Packing is linear, so the key of
a neighbour ``(x + dx, y + dy, z + dz)`` is ``key + offset_key(dx, dy, dz)`` as long as the neighbour is
itself packable (checked once per map, with the kernel's extent as margin). Keys sort batch-major, then
x, y, z.

Kernel maps
-----------
A :class:`KernelMap` holds, for each kernel offset ``f`` (flattened as ``f = iz * k * k + iy * k + ix``,
matching the weight layout ``[Cout, kz, ky, kx, Cin]`` of :mod:`ppkt.sparse.conv`), the int64 index pairs
``(in_idx[f], out_idx[f])`` such that ``out[out_idx[f]] += in[in_idx[f]] @ W_f``. They are found with sorted
keys and ``torch.searchsorted`` (a Python loop runs over kernel offsets only, never over points).
:class:`KernelMapCache` builds every map once per (level, kind, kernel size, stride, padding) and is shared
by all :class:`~ppkt.sparse.tensor.SparseTensor` derived from the same input; ``build_counts`` records how
often each map was built (always 1 when reuse works). The cache is also where another backend keeps its
per-input state (``backend_state``, e.g. :mod:`ppkt.sparse.spconv`'s indices and index pairs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

COORD_BITS = 18
BATCH_BITS = 63 - 3 * COORD_BITS
COORD_OFFSET = 1 << (COORD_BITS - 1)
COORD_MIN = -COORD_OFFSET
COORD_MAX = COORD_OFFSET - 1
BATCH_MAX = (1 << BATCH_BITS) - 1
_MASK = (1 << COORD_BITS) - 1

MapKey = tuple[str, int, int, int, int]


def check_packable(coords: Tensor, margin: int = 0) -> None:
    """Raise ``ValueError`` unless all rows of ``coords`` ``[M, 4]`` (± ``margin`` spatially) pack."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must have shape [M, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        return
    lo = coords.amin(dim=0).tolist()
    hi = coords.amax(dim=0).tolist()
    if lo[0] < 0 or hi[0] > BATCH_MAX:
        raise ValueError(f"batch index out of the packable range [0, {BATCH_MAX}]: got [{lo[0]}, {hi[0]}]")
    if min(lo[1:]) - margin < COORD_MIN or max(hi[1:]) + margin > COORD_MAX:
        raise ValueError(
            f"voxel coordinates out of the packable range [{COORD_MIN}, {COORD_MAX}] "
            f"(kernel margin {margin}): got min {min(lo[1:])}, max {max(hi[1:])}; "
            "use a larger voxel size or re-centre the cloud"
        )


def pack_keys(coords: Tensor, check: bool = True) -> Tensor:
    """Pack integer ``[M, 4]`` (batch, x, y, z) coordinates into int64 keys ``[M]``."""
    if check:
        check_packable(coords)
    c = coords.to(torch.int64)
    key = c[:, 0] << (3 * COORD_BITS)
    key = key | ((c[:, 1] + COORD_OFFSET) << (2 * COORD_BITS))
    key = key | ((c[:, 2] + COORD_OFFSET) << COORD_BITS)
    return key | (c[:, 3] + COORD_OFFSET)


def unpack_keys(keys: Tensor) -> Tensor:
    """Inverse of :func:`pack_keys`: int64 keys ``[M]`` -> int32 coordinates ``[M, 4]``."""
    b = keys >> (3 * COORD_BITS)
    x = ((keys >> (2 * COORD_BITS)) & _MASK) - COORD_OFFSET
    y = ((keys >> COORD_BITS) & _MASK) - COORD_OFFSET
    z = (keys & _MASK) - COORD_OFFSET
    return torch.stack([b, x, y, z], dim=1).to(torch.int32)


def offset_key(dx: int, dy: int, dz: int) -> int:
    """Key difference between a site and its neighbour at ``(dx, dy, dz)`` (see module docstring)."""
    return (dx << (2 * COORD_BITS)) + (dy << COORD_BITS) + dz


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets ``(ix, iy, iz)`` in ``[0, k)^3`` in flat weight order ``f = iz * k * k + iy * k + ix``."""
    k = kernel_size
    return [(ix, iy, iz) for iz in range(k) for iy in range(k) for ix in range(k)]


@dataclass(frozen=True)
class KernelMap:
    """Per-offset gather/scatter index pairs of one sparse convolution.

    ``in_idx[f]`` / ``out_idx[f]``: int64 ``[P_f]`` row indices into the input ``[n_in, Cin]`` and output
    ``[n_out, Cout]`` feature matrices. ``identity`` is the offset whose map is the identity (the centre of a
    submanifold kernel; ``n_in == n_out``); its index tensors are empty and must not be used.
    """

    kernel_size: int
    in_idx: tuple[Tensor, ...]
    out_idx: tuple[Tensor, ...]
    n_in: int
    n_out: int
    identity: int | None = None

    @property
    def num_pairs(self) -> int:
        """Total number of (input, output) pairs, the identity counted as ``n_in`` pairs."""
        n = sum(int(t.numel()) for t in self.in_idx)
        return n + (self.n_in if self.identity is not None else 0)

    def transposed(self) -> KernelMap:
        """The map of the transposed convolution (same offsets and weights, inputs and outputs swapped)."""
        return KernelMap(self.kernel_size, self.out_idx, self.in_idx, self.n_out, self.n_in, self.identity)


@dataclass
class _Level:
    coords: Tensor  # int32 [M, 4], level coordinates
    keys: Tensor | None = None  # int64 [M], in row order
    sorted_keys: Tensor | None = None  # int64 [M], ascending
    perm: Tensor | None = None  # int64 [M], sorted_keys = keys[perm]


class KernelMapCache:
    """Coordinates of every resolution level of one input and all kernel maps between them.

    Levels are identified by their tensor-stride. Maps are keyed ``(kind, stride, kernel, conv_stride,
    padding)`` with ``kind`` in ``{"subm", "down"}``; the up-sampling map is the cached down map transposed.
    ``backend_state``: per-input state of other sparse-conv backends, keyed by backend name.
    """

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}
        self._maps: dict[MapKey, KernelMap] = {}
        self._level_source: dict[int, MapKey] = {}
        self.build_counts: Counter[MapKey] = Counter()
        self.backend_state: dict[str, Any] = {}

    @property
    def num_builds(self) -> int:
        """Total number of kernel maps built so far (each cached map counts once when reuse works)."""
        return sum(self.build_counts.values())

    @property
    def strides(self) -> list[int]:
        return sorted(self._levels)

    def register_level(self, stride: int, coords: Tensor) -> None:
        """Record the coordinates of level ``stride`` (an error if it exists with other coordinates)."""
        level = self._levels.get(stride)
        if level is None:
            self._levels[stride] = _Level(coords)
        elif level.coords is not coords and not torch.equal(level.coords, coords):
            raise ValueError(f"level with stride {stride} is already registered with different coordinates")

    def coords(self, stride: int) -> Tensor:
        if stride not in self._levels:
            raise KeyError(f"no level with stride {stride} (known: {self.strides})")
        return self._levels[stride].coords

    def _sorted(self, stride: int, margin: int) -> tuple[Tensor, Tensor, Tensor]:
        level = self._levels[stride]
        check_packable(level.coords, margin)
        if level.keys is None or level.sorted_keys is None or level.perm is None:
            keys = pack_keys(level.coords, check=False)
            sorted_keys, perm = torch.sort(keys)
            if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
                raise ValueError(
                    f"duplicate coordinates at stride {stride}: voxel coordinates must be unique"
                )
            level.keys, level.sorted_keys, level.perm = keys, sorted_keys, perm
        return level.keys, level.sorted_keys, level.perm

    def submanifold(self, stride: int, kernel_size: int) -> KernelMap:
        """Map of a submanifold conv at level ``stride`` (outputs = inputs, centred odd kernel)."""
        key: MapKey = ("subm", stride, kernel_size, 1, kernel_size // 2)
        kmap = self._maps.get(key)
        if kmap is None:
            kmap = self._build_submanifold(stride, kernel_size)
            self._maps[key] = kmap
            self.build_counts[key] += 1
        return kmap

    def _build_submanifold(self, stride: int, k: int) -> KernelMap:
        if k < 1 or k % 2 == 0:
            raise ValueError(f"submanifold kernel size must be odd and positive, got {k}")
        c = k // 2
        keys, sorted_keys, perm = self._sorted(stride, margin=c)
        m = int(keys.numel())
        n_off = k**3
        centre = n_off // 2
        empty = keys.new_empty(0)
        in_idx: list[Tensor] = [empty] * n_off
        out_idx: list[Tensor] = [empty] * n_off
        offsets = kernel_offsets(k)
        for f in range(centre + 1, n_off if m > 0 else 0):
            ix, iy, iz = offsets[f]
            query = keys + offset_key(ix - c, iy - c, iz - c)
            pos = torch.searchsorted(sorted_keys, query).clamp_(max=m - 1)
            hit = sorted_keys[pos] == query
            out_f = hit.nonzero().squeeze(1)
            in_f = perm[pos[out_f]]
            in_idx[f], out_idx[f] = in_f, out_f
            # offset -d (flat index n_off - 1 - f) is the same pairs swapped
            in_idx[n_off - 1 - f], out_idx[n_off - 1 - f] = out_f, in_f
        return KernelMap(k, tuple(in_idx), tuple(out_idx), m, m, identity=centre)

    def downsample(self, stride: int, kernel_size: int, conv_stride: int, padding: int) -> KernelMap:
        """Map of a strided conv from level ``stride`` to level ``stride * conv_stride`` (registered here)."""
        if conv_stride < 2 or kernel_size < 1 or padding < 0:
            raise ValueError(
                f"invalid strided conv: kernel {kernel_size}, stride {conv_stride}, padding {padding}"
            )
        key: MapKey = ("down", stride, kernel_size, conv_stride, padding)
        kmap = self._maps.get(key)
        if kmap is None:
            kmap, level = self._build_down(stride, kernel_size, conv_stride, padding)
            out_stride = stride * conv_stride
            source = self._level_source.get(out_stride)
            if out_stride in self._levels and source != key:
                raise ValueError(
                    f"level with stride {out_stride} already exists (made by {source}); a second "
                    f"strided conv {key} to the same level would give different coordinates"
                )
            self._levels[out_stride] = level
            self._level_source[out_stride] = key
            self._maps[key] = kmap
            self.build_counts[key] += 1
        return kmap

    def _build_down(self, stride: int, k: int, s: int, p: int) -> tuple[KernelMap, _Level]:
        coords = self.coords(stride)
        check_packable(coords, margin=max(p, k))
        c = coords.to(torch.int64)
        if k == s and p == 0:
            return self._build_down_cells(c, k)
        return self._build_down_general(c, k, s, p)

    @staticmethod
    def _build_down_general(c: Tensor, k: int, s: int, p: int) -> tuple[KernelMap, _Level]:
        """Any kernel/stride/padding: one pass per kernel offset over all inputs."""
        batch, xyz = c[:, :1], c[:, 1:]
        offsets = kernel_offsets(k)
        in_list: list[Tensor] = []
        cand_list: list[Tensor] = []
        for ix, iy, iz in offsets:
            num = xyz - torch.tensor([ix - p, iy - p, iz - p], dtype=torch.int64, device=c.device)
            in_f = (num.remainder(s) == 0).all(dim=1).nonzero().squeeze(1)
            out_xyz = num[in_f].div(s, rounding_mode="floor")
            in_list.append(in_f)
            cand_list.append(pack_keys(torch.cat([batch[in_f], out_xyz], dim=1), check=False))
        out_keys, inverse = torch.unique(torch.cat(cand_list), sorted=True, return_inverse=True)
        out_idx = torch.split(inverse, [int(t.numel()) for t in in_list])
        n_out = int(out_keys.numel())
        kmap = KernelMap(k, tuple(in_list), tuple(out_idx), int(c.shape[0]), n_out)
        # the output keys are already unique and sorted: seed the new level's hash with them
        level = _Level(unpack_keys(out_keys), out_keys, out_keys, torch.arange(n_out, device=c.device))
        return kmap, level

    @staticmethod
    def _build_down_cells(c: Tensor, k: int) -> tuple[KernelMap, _Level]:
        """``kernel == stride``, no padding: every input lies in exactly one output cell ``floor(i / k)``
        at offset ``i - k * o``, so one pass (no loop over offsets) finds all pairs."""
        xyz = c[:, 1:]
        if k & (k - 1) == 0:  # power of two: shifts and masks instead of (slow) integer floor division
            shift = k.bit_length() - 1
            out_xyz, rem = xyz >> shift, xyz & (k - 1)
        else:
            out_xyz = xyz.div(k, rounding_mode="floor")
            rem = xyz - out_xyz * k
        flat = (rem[:, 2] * k + rem[:, 1]) * k + rem[:, 0]  # f = iz * k * k + iy * k + ix
        out_keys, inverse = torch.unique(
            pack_keys(torch.cat([c[:, :1], out_xyz], dim=1), check=False), sorted=True, return_inverse=True
        )
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=k**3).tolist()
        in_list = torch.split(order, counts)
        out_list = torch.split(inverse[order], counts)
        n_out = int(out_keys.numel())
        kmap = KernelMap(k, tuple(in_list), tuple(out_list), int(c.shape[0]), n_out)
        level = _Level(unpack_keys(out_keys), out_keys, out_keys, torch.arange(n_out, device=c.device))
        return kmap, level

    def upsample(
        self, stride: int, kernel_size: int, conv_stride: int, padding: int
    ) -> tuple[KernelMap, int]:
        """Transposed map from level ``stride`` back to the finer level ``stride // conv_stride``.

        Requires the matching :meth:`downsample` map to have been built (its output coordinates define the
        coarse level). Returns the map and the fine stride; the fine coordinates are ``coords(fine)``.
        """
        if stride % conv_stride != 0:
            raise ValueError(f"cannot up-sample stride {stride} by {conv_stride}")
        fine = stride // conv_stride
        key: MapKey = ("down", fine, kernel_size, conv_stride, padding)
        if key not in self._maps or self._level_source.get(stride) != key:
            raise ValueError(
                f"no cached down-sampling map {key} produced level {stride}: an inverse conv must mirror a "
                "SparseConv3d with the same kernel_size/stride/padding applied to the same input"
            )
        up_key: MapKey = ("up", stride, kernel_size, conv_stride, padding)
        kmap = self._maps.get(up_key)
        if kmap is None:
            kmap = self._maps[key].transposed()
            self._maps[up_key] = kmap
        return kmap, fine
