"""Pure-PyTorch sparse 3D convolution backend (device-agnostic, autograd-compatible).

* :class:`SparseTensor`: features ``[M, C]`` + int32 coordinates ``[M, 4]`` ``(batch, x, y, z)`` at a
  tensor-stride, stored divided by the stride; tensors of one input share a :class:`KernelMapCache`.
* :class:`SubMConv3d`, :class:`SparseConv3d`, :class:`SparseInverseConv3d`: spconv-layout weights
  ``[Cout, kz, ky, kx, Cin]``.
"""

from ppkt.sparse.conv import SparseConv3d, SparseInverseConv3d, SubMConv3d, apply_kernel_map
from ppkt.sparse.kernel_map import (
    BATCH_MAX,
    COORD_MAX,
    COORD_MIN,
    KernelMap,
    KernelMapCache,
    check_packable,
    pack_keys,
    unpack_keys,
)
from ppkt.sparse.tensor import SparseTensor, sparse_cat

__all__ = [
    "BATCH_MAX",
    "COORD_MAX",
    "COORD_MIN",
    "KernelMap",
    "KernelMapCache",
    "SparseConv3d",
    "SparseInverseConv3d",
    "SparseTensor",
    "SubMConv3d",
    "apply_kernel_map",
    "check_packable",
    "pack_keys",
    "sparse_cat",
    "unpack_keys",
]
