"""Kernel layouts of the sparse-conv libraries, and exact conversions from and to ppkt's.

ppkt (and spconv 2.x with ppkt's ``(batch, z, y, x)`` indices): ``weight [Cout, kz, ky, kx, Cin]``;
``weight[:, iz, iy, ix, :]`` multiplies the input at offset ``(ix - c, iy - c, iz - c)`` of the output site
(``c = k // 2`` for odd kernels; ``c = 0`` for the ``k = stride = 2`` down/up convs, whose offsets are the
cell ``{0, 1}^3``), as ``out = in @ W.T``. Every conversion below is a pure re-indexing (no arithmetic),
so it is exact in any dtype, and each ``from_*`` is the inverse of its ``to_*``.

Layouts (sources: the libraries' own code, as cited; checked here numerically where the library runs)
-----------------------------------------------------------------------------------------------------
* **spconv 2.x, indices ``(batch, x, y, z)``** (Pointcept: ``indices = cat([batch, grid_coord])`` with
  ``grid_coord`` ``(x, y, z)``): ``[Cout, kx, ky, kz, Cin]``, the kernel axes follow the index columns
  (spconv 2's "KRSC" layout, ``spconv/pytorch/conv.py``: ``weight_shape = [out, *kernel_size, in]``).
  Proved against the spconv 2.3.8 wheel in ``tests/test_export.py``.
* **spconv 2.x 1×1×1 convs** (``conv1x1`` fast path of ``SparseConvolution._conv_forward``, spconv 2.3.x
  with ``FILTER_HWIO = False``): ``torch.mm(features, weight.view(Cin, Cout))`` -- the ``[Cout, 1, 1, 1,
  Cin]`` tensor is *reinterpreted* as ``[Cin, Cout]``, not transposed. Every 1×1×1 conv of a network run
  by spconv 2.3 (Pointcept's ``proj`` and ``final``) therefore stores ``W.T`` in row-major order
  (:func:`to_spconv2_1x1`). Proved against spconv 2.3.8 here; a future spconv that reads the layout
  of its other kernels would need the plain reshape instead.
* **spconv 1.x** (OpenPCDet's older checkpoints, indices ``(batch, z, y, x)``): ``[kz, ky, kx, Cin, Cout]``
  (spconv 1.2 ``SparseConvolution``: ``Parameter(torch.Tensor(*kernel_size, in_channels, out_channels))``).
  Not runnable here: proved only as the re-indexing ``w1[iz, iy, ix] == W[:, iz, iy, ix, :].T``.
* **MinkowskiEngine 0.5** (SLidR's Res16UNet34C; coordinates ``(batch, x, y, z)``): ``kernel [K, Cin,
  Cout]`` (``[Cin, Cout]`` when ``K == 1`` at stride 1), ``out = in @ kernel[k]``, with the kernel index ``k``
  enumerated by ``kernel_region::coordinate_at`` (``src/kernel_region.hpp``): ``kernel_index % k`` is the
  first spatial axis (``x``), then it is divided by ``k`` for ``y``, then ``z`` -- ``k = ix + K * (iy + K *
  iz)``; offset ``(ix - K // 2) * tensor_stride`` for odd ``K`` and ``ix * tensor_stride`` (the cell, not
  centred) for even ``K`` (:func:`minkowski_kernel_offsets`). A transposed conv
  (``CoordinateMapManager::kernel_map`` with ``is_transpose``, ``src/coordinate_map_manager.cpp``) uses the
  map of the regular conv from its *output* (fine) map to its input (coarse) map, with the region at the
  fine tensor stride, in/out swapped: ``out[c + offset_k] += in[c] @ kernel[k]`` -- the same ``[K, Cin,
  Cout]`` tensor and offset order. Read from MinkowskiEngine's source with the search tool (2026-12);
  MinkowskiEngine cannot be installed here, so the conversion is proved against reference convolutions
  that follow this enumeration (``tests/test_export.py``).
* **TorchSparse 1.4 / 2.0** (mmdet3d's ``MinkUNetBackbone`` on ``torchsparse``): ``kernel [K, Cin, Cout]``
  with offsets from ``get_kernel_offsets``: ``x`` fastest for odd ``K`` ("compatible with
  MinkowskiEngine"), ``z`` fastest for even ``K``, and even offsets ``0 .. K - 1``
  (:func:`torchsparse_kernel_offsets`). Read from torchsparse 1.4's ``torchsparse/nn/utils/kernel.py``
  (from memory); checked only against a reference convolution following it.
"""

from __future__ import annotations

from torch import Tensor


def _check_kernel(w: Tensor) -> tuple[int, int, int]:
    if w.ndim != 5 or not (w.shape[1] == w.shape[2] == w.shape[3]):
        raise ValueError(f"expected a ppkt conv weight [Cout, k, k, k, Cin], got {tuple(w.shape)}")
    return int(w.shape[0]), int(w.shape[1]), int(w.shape[4])


# --- spconv 2.x with (batch, x, y, z) indices (Pointcept) ---------------------------------------------
def to_spconv2_xyz(w: Tensor) -> Tensor:
    """ppkt ``[Cout, kz, ky, kx, Cin]`` -> spconv 2 on ``(b, x, y, z)``: ``[Cout, kx, ky, kz, Cin]``."""
    _check_kernel(w)
    return w.permute(0, 3, 2, 1, 4).contiguous()


def from_spconv2_xyz(w: Tensor) -> Tensor:
    """Inverse of :func:`to_spconv2_xyz` (the same axis swap)."""
    return to_spconv2_xyz(w)


def to_spconv2_1x1(w: Tensor) -> Tensor:
    """A ppkt 1×1×1 conv ``[Cout, 1, 1, 1, Cin]`` (or a ``nn.Linear`` weight ``[Cout, Cin]``) -> the
    ``[Cout, 1, 1, 1, Cin]`` tensor that spconv 2.3 reads as ``view(Cin, Cout)`` (``= W.T``)."""
    cout, cin = int(w.shape[0]), int(w.shape[-1])
    if w.numel() != cout * cin:
        raise ValueError(f"expected a 1x1x1 weight, got {tuple(w.shape)}")
    return w.reshape(cout, cin).t().contiguous().reshape(cout, 1, 1, 1, cin)


def from_spconv2_1x1(w: Tensor) -> Tensor:
    """Inverse of :func:`to_spconv2_1x1`: spconv 2.3's 1×1×1 tensor -> ppkt ``[Cout, 1, 1, 1, Cin]``."""
    cout, cin = int(w.shape[0]), int(w.shape[-1])
    if w.ndim != 5 or w.numel() != cout * cin:
        raise ValueError(f"expected a [Cout, 1, 1, 1, Cin] weight, got {tuple(w.shape)}")
    return w.reshape(cin, cout).t().contiguous().reshape(cout, 1, 1, 1, cin)


# --- spconv 1.x ---------------------------------------------------------------------------------------
def to_spconv1(w: Tensor) -> Tensor:
    """ppkt ``[Cout, kz, ky, kx, Cin]`` -> spconv 1.x ``[kz, ky, kx, Cin, Cout]`` (same ``(b, z, y, x)``)."""
    _check_kernel(w)
    return w.permute(1, 2, 3, 4, 0).contiguous()


def from_spconv1(w: Tensor) -> Tensor:
    """spconv 1.x ``[kz, ky, kx, Cin, Cout]`` -> ppkt ``[Cout, kz, ky, kx, Cin]``."""
    if w.ndim != 5:
        raise ValueError(f"expected a spconv 1.x weight [kz, ky, kx, Cin, Cout], got {tuple(w.shape)}")
    return w.permute(4, 0, 1, 2, 3).contiguous()


# --- MinkowskiEngine ----------------------------------------------------------------------------------
def minkowski_kernel_offsets(k: int) -> list[tuple[int, int, int]]:
    """MinkowskiEngine's offset ``(dx, dy, dz)`` (unit tensor-stride) of each kernel index ``0 .. k³-1``:
    ``KernelRegion::coordinate_at`` peels ``kernel_index % k`` off for the first spatial axis first."""
    out = []
    for index in range(k**3):
        off = []
        for _axis in range(3):
            i = index % k
            off.append(i if k % 2 == 0 else i - k // 2)
            index //= k
        out.append((off[0], off[1], off[2]))
    return out


def to_minkowski(w: Tensor) -> Tensor:
    """ppkt ``[Cout, kz, ky, kx, Cin]`` -> MinkowskiEngine ``kernel [K, Cin, Cout]`` (``[Cin, Cout]`` for
    ``K = 1``); ppkt's flat offset ``iz*k*k + iy*k + ix`` is MinkowskiEngine's kernel index."""
    cout, k, cin = _check_kernel(w)
    kernel = w.reshape(cout, k**3, cin).permute(1, 2, 0).contiguous()
    return kernel[0] if k == 1 else kernel


def from_minkowski(kernel: Tensor, k: int) -> Tensor:
    """Inverse of :func:`to_minkowski` for kernel size ``k``."""
    if k == 1 and kernel.ndim == 2:
        kernel = kernel.unsqueeze(0)
    if kernel.ndim != 3 or kernel.shape[0] != k**3:
        raise ValueError(f"expected a MinkowskiEngine kernel [{k**3}, Cin, Cout], got {tuple(kernel.shape)}")
    cin, cout = int(kernel.shape[1]), int(kernel.shape[2])
    return kernel.permute(2, 0, 1).reshape(cout, k, k, k, cin).contiguous()


# --- TorchSparse --------------------------------------------------------------------------------------
def torchsparse_kernel_offsets(k: int) -> list[tuple[int, int, int]]:
    """TorchSparse's ``get_kernel_offsets(k)`` (unit stride): ``arange(-k // 2 + 1, k // 2 + 1)`` per axis,
    ``x`` fastest for odd ``k`` and ``z`` fastest for even ``k``."""
    r = list(range(-k // 2 + 1, k // 2 + 1))
    if k % 2 == 1:
        return [(x, y, z) for z in r for y in r for x in r]
    return [(x, y, z) for x in r for y in r for z in r]


def to_torchsparse(w: Tensor) -> Tensor:
    """ppkt ``[Cout, kz, ky, kx, Cin]`` -> TorchSparse ``kernel [K, Cin, Cout]`` in its offset order
    (``[Cin, Cout]`` for ``K = 1``)."""
    cout, k, cin = _check_kernel(w)
    if k % 2 == 1:
        return to_minkowski(w)
    return w.permute(3, 2, 1, 4, 0).reshape(k**3, cin, cout).contiguous()  # [kx, ky, kz, Cin, Cout]


def from_torchsparse(kernel: Tensor, k: int) -> Tensor:
    """Inverse of :func:`to_torchsparse` for kernel size ``k``."""
    if k % 2 == 1:
        return from_minkowski(kernel, k)
    if kernel.ndim != 3 or kernel.shape[0] != k**3:
        raise ValueError(f"expected a TorchSparse kernel [{k**3}, Cin, Cout], got {tuple(kernel.shape)}")
    cin, cout = int(kernel.shape[1]), int(kernel.shape[2])
    return kernel.reshape(k, k, k, cin, cout).permute(4, 2, 1, 0, 3).contiguous()


def ppkt_kernel_offsets(k: int, centred: bool) -> list[tuple[int, int, int]]:
    """ppkt's offset ``(dx, dy, dz)`` of each flat weight index ``iz*k*k + iy*k + ix`` (centred: minus
    ``k // 2``; else the cell offsets of a ``kernel = stride`` down conv)."""
    c = k // 2 if centred else 0
    return [(ix - c, iy - c, iz - c) for iz in range(k) for iy in range(k) for ix in range(k)]


__all__ = [
    "from_minkowski",
    "from_spconv1",
    "from_spconv2_1x1",
    "from_spconv2_xyz",
    "from_torchsparse",
    "minkowski_kernel_offsets",
    "ppkt_kernel_offsets",
    "to_minkowski",
    "to_spconv1",
    "to_spconv2_1x1",
    "to_spconv2_xyz",
    "to_torchsparse",
]
