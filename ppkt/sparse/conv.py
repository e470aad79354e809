"""Sparse 3D convolutions in pure PyTorch: submanifold, strided (down) and transposed (up).

All modules map a :class:`~ppkt.sparse.tensor.SparseTensor` with features ``[M_in, Cin]`` to one with
features ``[M_out, Cout]``; kernel maps come from the input's shared cache (built once per level).

Weight layout (spconv's)
------------------------
``weight`` has shape ``[Cout, kz, ky, kx, Cin]``; ``weight[:, iz, iy, ix, :]`` (a ``[Cout, Cin]`` matrix)
multiplies the input at the neighbour offset ``(dx, dy, dz) = (ix - c, iy - c, iz - c)`` of the output
site (``c = k // 2`` for submanifold convs; ``c = padding`` for strided convs, relative to ``stride * o``).
Equivalently, for a dense grid indexed ``[B, C, Z, Y, X]``:

* :class:`SubMConv3d` equals ``F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=k // 2)`` read at the
  active sites (cross-correlation);
* :class:`SparseConv3d` equals ``F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), stride=s, padding=p)`` at
  every output site whose receptive field holds at least one active input;
* :class:`SparseInverseConv3d` equals ``F.conv_transpose3d(dense, weight.permute(4, 0, 1, 2, 3), stride=s,
  padding=p)`` read at the fine sites of the matching :class:`SparseConv3d`.

Compute: per kernel offset gather -> matmul -> ``index_add_`` (the submanifold centre is a plain matmul),
inside a custom autograd function whose backward does the transposed gathers/scatters, so only the input
features and weights are kept for backward.

Backends
--------
Every conv has a ``backend`` attribute, one of :data:`BACKENDS`: ``"torch"`` (default; the pure-PyTorch
compute above) or ``"spconv"`` (spconv 2.x, :mod:`ppkt.sparse.spconv`), chosen per convolution and changed
with :func:`set_backend`. Both use the same parameters, give the same outputs (same rows, same order) and
accept each other's state dicts; a 1×1×1 submanifold conv is a plain matmul on both.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ppkt.sparse.kernel_map import KernelMap
from ppkt.sparse.spconv import spconv_conv
from ppkt.sparse.tensor import SparseTensor

#: sparse-conv backends: ``torch`` (ours, pure PyTorch, CPU and CUDA) or ``spconv`` (spconv 2.x, for CUDA
#: users); same parameters and state dict, so checkpoints move between backends
BACKENDS = ("torch", "spconv")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def check_backend(name: str) -> str:
    """``name`` if it is one of :data:`BACKENDS`, else ``ValueError``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown sparse-conv backend {name!r}; choose one of {list(BACKENDS)}")
    return name


class _SparseConvFunction(torch.autograd.Function):
    """``out[n_out, Cout] = sum_f scatter(out_idx[f], gather(in_idx[f], feats) @ weight[f])``."""

    @staticmethod
    def forward(ctx: Any, feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
        # feats [n_in, Cin], weight [K, Cin, Cout]
        if kmap.identity is not None:
            out = feats @ weight[kmap.identity]
        else:
            out = feats.new_zeros(kmap.n_out, weight.shape[2])
        for f, (in_f, out_f) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
            if f == kmap.identity or in_f.numel() == 0:
                continue
            out.index_add_(0, out_f, feats.index_select(0, in_f) @ weight[f])
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous()
        need_feats, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_feats: Tensor | None = None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        if need_feats:
            if kmap.identity is not None:
                grad_feats = grad_out @ weight[kmap.identity].t()
            else:
                grad_feats = torch.zeros_like(feats)
        if kmap.identity is not None and grad_weight is not None:
            torch.mm(feats.t(), grad_out, out=grad_weight[kmap.identity])
        for f, (in_f, out_f) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
            if f == kmap.identity or in_f.numel() == 0:
                continue
            g = grad_out.index_select(0, out_f)
            if grad_feats is not None:
                grad_feats.index_add_(0, in_f, g @ weight[f].t())
            if grad_weight is not None:
                torch.mm(feats.index_select(0, in_f).t(), g, out=grad_weight[f])
        return grad_feats, grad_weight, None


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def apply_kernel_map(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """Sparse conv core: ``feats [n_in, Cin]``, ``weight [Cout, k, k, k, Cin]`` -> ``[n_out, Cout]``.

    Under autocast both operands are cast to the autocast dtype (the gathers and scatters run in it).
    """
    cout, cin = weight.shape[0], weight.shape[-1]
    w = weight.reshape(cout, -1, cin).permute(1, 2, 0)  # [K, Cin, Cout]
    cast = _autocast_dtype(feats.device)
    if cast is not None:
        feats, w = feats.to(cast), w.to(cast)
    elif w.dtype != feats.dtype:
        w = w.to(feats.dtype)
    with torch.autocast(feats.device.type, enabled=False):
        out: Tensor = _SparseConvFunction.apply(feats, w.contiguous(), kmap)
    return out


class SparseConvModule(nn.Module):
    """Base of the sparse convs: holds the ``[Cout, k, k, k, Cin]`` weight, the optional ``[Cout]`` bias
    (spconv-style init) and the ``backend``; ``forward`` runs the conv on that backend, then adds the bias."""

    #: ``"subm"``, ``"down"`` or ``"up"``
    kind: ClassVar[str]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        bias: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or kernel_size < 1 or stride < 1 or padding < 0:
            raise ValueError(
                f"invalid conv: in={in_channels} out={out_channels} kernel={kernel_size} stride={stride} "
                f"padding={padding}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.backend = check_backend(backend)
        k = kernel_size
        self.weight = nn.Parameter(
            torch.empty(out_channels, k, k, k, in_channels, device=device, dtype=dtype)
        )
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # spconv: kaiming_uniform_(a=sqrt(5)) with fan_in = Cin * k^3, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        fan_in = self.in_channels * self.kernel_size**3
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.num_channels != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected {self.in_channels} channels, got {x.num_channels}"
            )
        if check_backend(self.backend) == "spconv" and not self._pointwise:
            k, s, p = self.kernel_size, self.stride, self.padding
            feats, stride = spconv_conv(x, self.weight, self.kind, k, s, p)
        else:
            feats, stride = self._torch_conv(x)
        if self.bias is not None:
            feats = feats + self.bias.to(feats.dtype)
        if stride == x.stride:
            return x.replace_feats(feats)
        return SparseTensor(feats, x.cache.coords(stride), stride, x.cache)

    @property
    def _pointwise(self) -> bool:
        return self.kind == "subm" and self.kernel_size == 1

    def _torch_conv(self, x: SparseTensor) -> tuple[Tensor, int]:
        """The ``torch`` backend: output features ``[M_out, Cout]`` without bias, and their tensor-stride."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.padding:
            s += f", padding={self.padding}"
        s += f", bias={self.bias is not None}"
        return s if self.backend == "torch" else s + f", backend={self.backend}"


def set_backend(module: ModuleT, backend: str) -> ModuleT:
    """Set the ``backend`` (one of :data:`BACKENDS`) of every sparse conv in ``module``, and return it."""
    check_backend(backend)
    for m in module.modules():
        if isinstance(m, SparseConvModule):
            m.backend = backend
    return module


class SubMConv3d(SparseConvModule):
    """Submanifold conv: output sites = input sites (same order); odd ``kernel_size``, centred."""

    kind = "subm"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "torch",
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"SubMConv3d needs an odd kernel_size, got {kernel_size}")
        k = kernel_size
        super().__init__(in_channels, out_channels, k, 1, k // 2, bias, device, dtype, backend)

    def _torch_conv(self, x: SparseTensor) -> tuple[Tensor, int]:
        if self.kernel_size == 1:
            w = self.weight.reshape(self.out_channels, self.in_channels)
            return x.feats @ w.t().to(x.feats.dtype), x.stride
        kmap = x.cache.submanifold(x.stride, self.kernel_size)
        return apply_kernel_map(x.feats, self.weight, kmap), x.stride


class SparseConv3d(SparseConvModule):
    """Strided (down-sampling) conv; output sites = every site of stride ``stride * s`` touched by an input.

    Output coordinates are sorted by ``(batch, x, y, z)`` (``torch`` backend; spconv's own order with
    ``spconv``). ``kernel_size == stride`` (``padding=0``) gives non-overlapping cells; e.g.
    ``kernel_size=3, stride=2, padding=1`` is also supported.
    """

    kind = "down"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "torch",
    ) -> None:
        if stride < 2:
            raise ValueError(f"SparseConv3d needs stride >= 2 (use SubMConv3d at stride 1), got {stride}")
        k, s, p = kernel_size, stride, padding
        super().__init__(in_channels, out_channels, k, s, p, bias, device, dtype, backend)

    def _torch_conv(self, x: SparseTensor) -> tuple[Tensor, int]:
        kmap = x.cache.downsample(x.stride, self.kernel_size, self.stride, self.padding)
        return apply_kernel_map(x.feats, self.weight, kmap), x.stride * self.stride


class SparseInverseConv3d(SparseConvModule):
    """Transposed (up-sampling) conv back to **exactly** the sites (and order) of the finer level.

    Uses the map of the :class:`SparseConv3d` with the same ``kernel_size``/``stride``/``padding`` (and
    backend) that produced the input's level, transposed; raises ``ValueError`` if there is none.
    """

    kind = "up"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "torch",
    ) -> None:
        if stride < 2:
            raise ValueError(f"SparseInverseConv3d needs stride >= 2, got {stride}")
        k, s, p = kernel_size, stride, padding
        super().__init__(in_channels, out_channels, k, s, p, bias, device, dtype, backend)

    def _torch_conv(self, x: SparseTensor) -> tuple[Tensor, int]:
        kmap, fine = x.cache.upsample(x.stride, self.kernel_size, self.stride, self.padding)
        return apply_kernel_map(x.feats, self.weight, kmap), fine
