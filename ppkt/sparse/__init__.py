"""Sparse 3D convolutions (device-agnostic, autograd-compatible) with a per-convolution backend.

* :class:`SparseTensor`: features ``[M, C]`` + int32 coordinates ``[M, 4]`` ``(batch, x, y, z)`` at a
  tensor-stride, stored divided by the stride; tensors of one input share a :class:`KernelMapCache`.
* :class:`SubMConv3d`, :class:`SparseConv3d`, :class:`SparseInverseConv3d`: spconv-layout weights
  ``[Cout, kz, ky, kx, Cin]``, each run on its ``backend`` (:data:`BACKENDS`): ``"torch"`` (pure PyTorch,
  the default) or ``"spconv"`` (spconv 2.x, :mod:`ppkt.sparse.spconv`); :func:`set_backend` sets it for
  every conv of a module. Parameters and outputs do not depend on the backend.
"""

from ppkt.sparse.conv import (
    BACKENDS,
    SparseConv3d,
    SparseConvModule,
    SparseInverseConv3d,
    SubMConv3d,
    apply_kernel_map,
    check_backend,
    set_backend,
)
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
    "BACKENDS",
    "BATCH_MAX",
    "COORD_MAX",
    "COORD_MIN",
    "KernelMap",
    "KernelMapCache",
    "SparseConv3d",
    "SparseConvModule",
    "SparseInverseConv3d",
    "SparseTensor",
    "SubMConv3d",
    "apply_kernel_map",
    "check_backend",
    "check_packable",
    "pack_keys",
    "set_backend",
    "sparse_cat",
    "unpack_keys",
]
