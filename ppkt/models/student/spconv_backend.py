"""spconv (2.x) as an optional reference: import with a CPU work-around, coordinate conversion, and a
:class:`SpconvUNet` that runs a :class:`~ppkt.models.student.SparseUNet`'s exact weights through spconv.

Conventions checked numerically by the benchmark (``max_abs_diff``) and :mod:`tests.test_bench`:

* spconv's indices are int32 ``[N, 4]`` ``(batch, z, y, x)`` with ``spatial_shape = [Z, Y, X]``; its weight
  ``[Cout, k0, k1, k2, Cin]`` indexes the kernel along index dims 1, 2, 3, i.e. ``[Cout, kz, ky, kx, Cin]``,
  which is ppkt's layout. ppkt's coordinates are ``(batch, x, y, z)``, so :func:`to_spconv_indices`
  reverses the spatial columns and the weights are shared unchanged.
* spconv needs non-negative coordinates; the benchmark shifts ppkt's coordinates to start at 0 (per axis,
  by a multiple of 16, so down-sampling cells are unchanged) before giving the same ones to both.
* spconv 2.3's CPU backward calls ``torch.cuda.current_stream()`` (for a stream it does not use on the
  CPU), which fails on a CPU-only torch; :func:`import_spconv` replaces that helper by one returning 0
  when CUDA is unavailable. Its CPU scatter is not thread-safe: run it with ``torch.set_num_threads(1)``.
* spconv 2.3's 1×1×1 fast path (``conv1x1``: a plain ``torch.mm``) reads a ``[Cout, 1, 1, 1, Cin]`` weight
  as ``view(Cin, Cout)``, i.e. not with the layout of its other kernels; :class:`SpconvUNet` therefore runs
  1×1×1 convs as the same ``mm`` on ppkt's ``[Cout, Cin]`` weight (:class:`Pointwise`).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.models.student.blocks import BasicBlock, ConvBNReLU

if TYPE_CHECKING:
    from ppkt.models.student.unet import SparseUNet
from ppkt.sparse import SparseConv3d, SparseInverseConv3d, SubMConv3d

#: spatial extents are padded to a multiple of this (4 stride-2 levels), and shifts are multiples of it
GRID_ALIGN = 16


def import_spconv() -> tuple[ModuleType | None, str | None]:
    """``(spconv.pytorch, None)``, or ``(None, reason)`` when it cannot be imported."""
    try:
        import spconv.pytorch as sp
    except Exception as e:  # ImportError, or a broken binary (OSError, RuntimeError…)
        return None, f"spconv not importable: {type(e).__name__}: {e}"
    _patch_cpu_stream()
    return sp, None


def spconv_version() -> str | None:
    try:
        import spconv

        return str(getattr(spconv, "__version__", "unknown"))
    except Exception:
        return None


def _patch_cpu_stream() -> None:
    if torch.cuda.is_available():
        return
    import importlib

    def get_current_stream() -> int:
        return 0

    for name in ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash"):
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        if hasattr(mod, "get_current_stream"):
            setattr(mod, "get_current_stream", get_current_stream)  # noqa: B010


def align_coords(coords: Tensor) -> Tensor:
    """``(batch, x, y, z)`` coordinates shifted per axis by a multiple of :data:`GRID_ALIGN` so that all are
    non-negative (stride-2 cells of up to 4 levels are unchanged)."""
    c = coords.clone()
    if c.shape[0] == 0:
        return c
    lo = c[:, 1:].amin(dim=0)
    shift = torch.div(lo, GRID_ALIGN, rounding_mode="floor") * GRID_ALIGN
    c[:, 1:] -= shift.to(c.dtype)
    return c


def to_spconv_indices(coords: Tensor) -> tuple[Tensor, list[int], int]:
    """ppkt ``(batch, x, y, z)`` non-negative coordinates -> spconv int32 ``(batch, z, y, x)`` indices,
    ``spatial_shape [Z, Y, X]`` (padded to a multiple of :data:`GRID_ALIGN`) and the batch size."""
    if coords.shape[0] and int(coords[:, 1:].min()) < 0:
        raise ValueError("to_spconv_indices: coordinates must be non-negative (use align_coords)")
    idx = coords[:, [0, 3, 2, 1]].to(torch.int32).contiguous()
    hi = coords[:, 1:].amax(dim=0).tolist() if coords.shape[0] else [0, 0, 0]
    x, y, z = (-(-(int(h) + 1) // GRID_ALIGN) * GRID_ALIGN for h in hi)
    batch = int(coords[:, 0].max()) + 1 if coords.shape[0] else 1
    return idx, [z, y, x], batch


class Pointwise(nn.Module):
    """A 1×1×1 submanifold conv on a ``SparseConvTensor``: ``feats @ W[Cout, Cin]ᵀ (+ bias)``, the ``mm``
    of spconv's own 1×1×1 path, on ppkt's (shared) weight."""

    def __init__(self, conv: SubMConv3d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Any) -> Any:
        c = self.conv
        out = torch.mm(x.features, c.weight.reshape(c.out_channels, c.in_channels).t())
        if c.bias is not None:
            out = out + c.bias
        return x.replace_feature(out)


def spconv_like(sp: ModuleType, conv: Any, indice_key: str | None) -> nn.Module:
    """The spconv module equivalent to a ppkt sparse conv, **sharing** its weight (and bias) parameters
    (a 1×1×1 submanifold conv becomes :class:`Pointwise`)."""
    k = conv.kernel_size
    bias = conv.bias is not None
    m: Any
    if isinstance(conv, SubMConv3d) and k == 1:
        return Pointwise(conv)
    if isinstance(conv, SubMConv3d):
        m = sp.SubMConv3d(conv.in_channels, conv.out_channels, k, bias=bias, indice_key=indice_key)
    elif isinstance(conv, SparseConv3d):
        m = sp.SparseConv3d(
            conv.in_channels,
            conv.out_channels,
            k,
            conv.stride,
            conv.padding,
            bias=bias,
            indice_key=indice_key,
        )
    elif isinstance(conv, SparseInverseConv3d):
        m = sp.SparseInverseConv3d(conv.in_channels, conv.out_channels, k, indice_key=indice_key, bias=bias)
    else:
        raise TypeError(f"not a ppkt sparse conv: {type(conv).__name__}")
    if tuple(m.weight.shape) != tuple(conv.weight.shape):
        raise ValueError(f"spconv weight shape {tuple(m.weight.shape)} != ppkt's {tuple(conv.weight.shape)}")
    m.weight = conv.weight
    if bias:
        m.bias = conv.bias
    return m


def _bn(bn: Any, feats: Tensor) -> Tensor:
    out: Tensor = nn.BatchNorm1d.forward(bn, feats)
    return out


class SpconvUNet(nn.Module):
    """``net`` (a :class:`SparseUNet`) evaluated with spconv convolutions and ``net``'s own parameters.

    ``forward(spconv.SparseConvTensor)`` returns the ``[M, C]`` output features in the input's row order,
    like ``net.forward``. Batch norms are ``net``'s modules (applied to the feature matrix).
    """

    def __init__(self, net: SparseUNet, sp: ModuleType) -> None:
        super().__init__()
        self.net = net
        self.sp = sp
        convs: dict[str, nn.Module] = {}

        def add(name: str, conv: Any, key: str | None) -> None:
            convs[name.replace(".", "__")] = spconv_like(sp, conv, key)

        def add_layer(prefix: str, layer: Any, stride: int) -> None:
            for b, block in enumerate(layer):
                assert isinstance(block, BasicBlock)
                add(f"{prefix}.{b}.conv1", block.conv1, f"subm{stride}k3")
                add(f"{prefix}.{b}.conv2", block.conv2, f"subm{stride}k3")
                if block.downsample is not None:
                    add(f"{prefix}.{b}.downsample.0", block.downsample[0], None)

        assert isinstance(net.stem, ConvBNReLU)
        add("stem.conv", net.stem.conv, f"subm1k{net.stem.conv.kernel_size}")
        for i, (down, enc) in enumerate(zip(net.down, net.enc)):
            add(f"down.{i}.conv", down.conv, f"down{2**i}")
            add_layer(f"enc.{i}", enc, 2 ** (i + 1))
        for j, (up, dec) in enumerate(zip(net.up, net.dec)):
            add(f"up.{j}.conv", up.conv, f"down{2 ** (3 - j)}")
            add_layer(f"dec.{j}", dec, 2 ** (3 - j))
        if net.head is not None:
            add("head", net.head, None)
        self.convs = nn.ModuleDict(convs)

    def make_input(self, feats: Tensor, coords: Tensor) -> Any:
        """A ``SparseConvTensor`` of ppkt ``(batch, x, y, z)`` non-negative coordinates."""
        idx, shape, batch = to_spconv_indices(coords)
        return self.sp.SparseConvTensor(feats, idx, shape, batch)

    def _conv(self, name: str, x: Any) -> Any:
        return self.convs[name.replace(".", "__")](x)

    def _cbr(self, m: Any, name: str, x: Any) -> Any:
        y = self._conv(name, x)
        return y.replace_feature(F.relu(_bn(m.bn, y.features)))

    def _layer(self, layer: Any, prefix: str, x: Any) -> Any:
        for b, block in enumerate(layer):
            out = self._conv(f"{prefix}.{b}.conv1", x)
            out = out.replace_feature(F.relu(_bn(block.bn1, out.features)))
            out = self._conv(f"{prefix}.{b}.conv2", out)
            f = _bn(block.bn2, out.features)
            if block.downsample is None:
                res = x.features
            else:
                res = _bn(block.downsample[1], self._conv(f"{prefix}.{b}.downsample.0", x).features)
            x = out.replace_feature(F.relu(f + res))
        return x

    def forward(self, x: Any) -> Tensor:
        net: Any = self.net
        y = self._cbr(net.stem, "stem.conv", x)
        skips = [y]
        for i, (down, enc) in enumerate(zip(net.down, net.enc)):
            y = self._layer(enc, f"enc.{i}", self._cbr(down, f"down.{i}.conv", y))
            skips.append(y)
        skips.pop()
        for j, (up, dec) in enumerate(zip(net.up, net.dec)):
            u = self._cbr(up, f"up.{j}.conv", y)
            s = skips.pop()
            y = self._layer(dec, f"dec.{j}", u.replace_feature(torch.cat([u.features, s.features], dim=1)))
        if net.head is not None:
            y = self._conv("head", y)
        out: Tensor = y.features
        return out


def spconv_forward(net: SparseUNet, feats: Tensor, coords: Tensor) -> Tensor:
    """``net``'s forward through spconv (``student.backend=spconv``): same parameters, same output rows.

    Coordinates ``(batch, x, y, z)`` are shifted by multiples of :data:`GRID_ALIGN` (cells unchanged) and
    reordered for spconv. On the CPU spconv's scatter races with more than one thread (wrong sums), so a
    CPU call with ``torch.get_num_threads() > 1`` raises instead of returning wrong numbers.
    """
    sp, why = import_spconv()
    if sp is None:
        raise ImportError(
            f"student.backend=spconv needs spconv ({why}); install the wheel for your CUDA, e.g. "
            "`pip install spconv-cu126`, or use student.backend=torch"
        )
    if feats.device.type == "cpu" and torch.get_num_threads() > 1:
        raise RuntimeError(
            "student.backend=spconv on the CPU is only correct with one thread (spconv's CPU scatter races); "
            "set trainer.threads=1 or use student.backend=torch (as fast on the CPU)"
        )
    impl = net.__dict__.get("_spconv_impl")
    if impl is None:  # kept out of the module tree: it shares net's parameters and holds net itself
        impl = SpconvUNet(net, sp)
        net.__dict__["_spconv_impl"] = impl
    x = impl.make_input(feats, align_coords(coords))
    out: Tensor = impl(x)
    return out
