"""spconv 2.x as a per-convolution backend of :mod:`ppkt.sparse` (a conv's ``backend = "spconv"``).

A ppkt conv on this backend (see :func:`ppkt.sparse.set_backend`) runs its convolution through spconv with
its **own** weight ``[Cout, kz, ky, kx, Cin]`` (spconv has no parameters of its own here) and adds its bias
itself, so parameters, state dict and outputs (row order included) are those of the ``torch`` backend and
checkpoints move freely between backends. Entry point: :func:`spconv_conv`, called by the conv modules.

Design: the spconv state lives in the input's kernel-map cache
-------------------------------------------------------------
spconv finds the index pairs of a conv under an ``indice_key`` in a dict carried by its
``SparseConvTensor``, and an inverse conv needs the key of its down-sampling conv. ppkt's counterpart is the
:class:`~ppkt.sparse.kernel_map.KernelMapCache` shared by every tensor derived from one input, so the spconv
state of an input hierarchy lives there too, as ``cache.backend_state["spconv"]`` (a
:class:`SpconvHierarchy`): for each level (tensor-stride) spconv's indices, spatial shape, batch size and
coordinate shift (:class:`SpconvLevel`), and one indice dict for the hierarchy. A conv builds a
``SparseConvTensor`` from its input's features and its level's state, runs spconv, and stores the new pairs
back. A :class:`~ppkt.sparse.SparseTensor` therefore carries nothing extra, and a second pass over the same
input reuses spconv's submanifold pairs as the torch backend reuses its kernel maps.

* Keys follow the cache's: ``subm{stride}k{k}`` and ``down{stride}k{k}s{s}p{p}`` (``stride``: the input's
  tensor-stride); an inverse conv uses the key of the down conv that made its input level.
* A level made by a spconv down-sampling conv has spconv's output rows, in spconv's order; they are
  registered in the cache, so later convs of either backend and :func:`~ppkt.sparse.sparse_cat` see them.
  Levels made otherwise (the input, a torch down conv) get their spconv state from the cache's coordinates.
* Backends may be mixed per conv, provided an inverse conv runs on the backend of its down conv, and a
  level is made by one down conv only (``ValueError`` otherwise).
* spconv recomputes the pairs of a non-submanifold conv on every call (it only reuses submanifold pairs);
  on a second pass its output sites must come back in the same order (checked: ``RuntimeError``).

Conventions and work-arounds
----------------------------
* spconv's indices are int32 ``[N, 4]`` ``(batch, z, y, x)`` with ``spatial_shape = [Z, Y, X]``; its weight
  ``[Cout, k0, k1, k2, Cin]`` indexes the kernel along index dims 1, 2, 3, i.e. ``[Cout, kz, ky, kx, Cin]``,
  which is ppkt's layout. ppkt's coordinates are ``(batch, x, y, z)``, so :func:`to_spconv_indices`
  reverses the spatial columns and the weights are used unchanged.
* spconv needs non-negative coordinates: each level's coordinates are shifted to start at 0 per axis, by a
  multiple of :data:`GRID_ALIGN` (:func:`align_coords`), so down-sampling cells are unchanged for 4 stride-2
  levels below it (a deeper level raises ``ValueError``); spatial extents are padded to multiples of it.
* spconv 2.3's CPU backward calls ``torch.cuda.current_stream()`` (for a stream it does not use on the
  CPU), which fails on a CPU-only torch; :func:`import_spconv` replaces that helper by one returning 0
  when CUDA is unavailable. Its CPU scatter is not thread-safe: on the CPU :func:`spconv_conv` refuses to
  run unless ``torch.get_num_threads() == 1`` (``RuntimeError``) instead of returning wrong sums.
* spconv 2.3's 1×1×1 fast path (``conv1x1``: a plain ``torch.mm``) reads a ``[Cout, 1, 1, 1, Cin]`` weight
  as ``view(Cin, Cout)``, i.e. not with the layout of its other kernels; a 1×1×1 submanifold conv is
  therefore the same ``mm`` on ppkt's weight on both backends (:class:`~ppkt.sparse.SubMConv3d` never calls
  spconv for it), and the inverse conv is given its stride so that spconv never takes that path.
* The conv runs as spconv's ``SparseConvolutionBase._conv_forward`` (the body of its modules' ``forward``),
  which takes the weight as an argument: no spconv module and no copy of the parameters is needed.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ppkt.sparse.kernel_map import KernelMapCache
from ppkt.sparse.tensor import SparseTensor

#: spatial extents are padded to a multiple of this, and coordinate shifts are multiples of it
GRID_ALIGN = 16


@functools.cache
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

    def get_current_stream() -> int:
        return 0

    for name in ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash"):
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        if hasattr(mod, "get_current_stream"):
            setattr(mod, "get_current_stream", get_current_stream)  # noqa: B010


def require_spconv(device: torch.device) -> ModuleType:
    """spconv for a conv on ``device``: ``ImportError`` when it cannot be imported, ``RuntimeError`` on the
    CPU with more than one torch thread (spconv's CPU scatter races: wrong sums)."""
    sp, why = import_spconv()
    if sp is None:
        raise ImportError(
            f"student.backend=spconv needs spconv ({why}); install the wheel for your CUDA, e.g. "
            "`pip install spconv-cu126`, or use student.backend=torch"
        )
    if device.type == "cpu" and torch.get_num_threads() > 1:
        raise RuntimeError(
            "student.backend=spconv on the CPU is only correct with one thread (spconv's CPU scatter races); "
            "set trainer.threads=1 or use student.backend=torch (as fast on the CPU)"
        )
    return sp


def alignment_shift(coords: Tensor) -> Tensor:
    """The per-axis shift ``[3]`` (a multiple of :data:`GRID_ALIGN`, same dtype) that makes the spatial
    columns of ``(batch, x, y, z)`` coordinates non-negative and less than :data:`GRID_ALIGN` at their min."""
    if coords.shape[0] == 0:
        return coords.new_zeros(3)
    lo = coords[:, 1:].amin(dim=0)
    return -torch.div(lo, GRID_ALIGN, rounding_mode="floor") * GRID_ALIGN


def align_coords(coords: Tensor) -> Tensor:
    """``(batch, x, y, z)`` coordinates shifted per axis by :func:`alignment_shift` (all non-negative;
    stride-2 cells of up to 4 levels are unchanged)."""
    c = coords.clone()
    c[:, 1:] += alignment_shift(coords)
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


@dataclass
class SpconvLevel:
    """spconv's view of one level: ``indices`` int32 ``[M, 4]`` ``(batch, z, y, x)`` (the level's rows, in
    order), ``spatial_shape [Z, Y, X]``, ``batch_size``, ``shift`` ``[3]`` (x, y, z) with ``indices`` = ppkt
    level coordinates + shift, and ``source``: the key of the spconv down conv that made the level (``None``
    when built from the cache's coordinates)."""

    indices: Tensor
    spatial_shape: list[int]
    batch_size: int
    shift: Tensor
    source: str | None = None

    @classmethod
    def from_coords(cls, coords: Tensor) -> SpconvLevel:
        shift = alignment_shift(coords)
        aligned = coords.clone()
        aligned[:, 1:] += shift
        indices, shape, batch = to_spconv_indices(aligned)
        return cls(indices, shape, batch, shift)


@dataclass
class SpconvHierarchy:
    """The spconv state of one input hierarchy: :class:`SpconvLevel` per tensor-stride, one indice dict."""

    levels: dict[int, SpconvLevel] = field(default_factory=dict)
    indice_dict: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, cache: KernelMapCache) -> SpconvHierarchy:
        """The hierarchy state kept in ``cache`` (created empty on first use)."""
        state = cache.backend_state.get("spconv")
        if state is None:
            state = cache.backend_state["spconv"] = cls()
        assert isinstance(state, cls)
        return state

    def level(self, cache: KernelMapCache, stride: int) -> SpconvLevel:
        """The level ``stride``, built from the cache's coordinates if no spconv conv made it."""
        level = self.levels.get(stride)
        if level is None:
            level = self.levels[stride] = SpconvLevel.from_coords(cache.coords(stride))
        return level


def spconv_conv(
    x: SparseTensor, weight: Tensor, kind: str, kernel_size: int, stride: int, padding: int
) -> tuple[Tensor, int]:
    """One sparse conv of ``kind`` ``"subm"``, ``"down"`` or ``"up"`` on spconv, without bias.

    Returns the output features ``[M_out, Cout]`` (rows: the output level's cached coordinates) and the
    output tensor-stride; a new level made by ``"down"`` is registered in ``x.cache``.
    """
    sp = require_spconv(x.device)
    h = SpconvHierarchy.of(x.cache)
    level = h.level(x.cache, x.stride)
    k, s, p = kernel_size, stride, padding
    indice_dict = h.indice_dict
    if kind == "subm":
        key, out_stride, s, p = f"subm{x.stride}k{k}", x.stride, 1, 0
    elif kind == "down":
        key, out_stride = f"down{x.stride}k{k}s{s}p{p}", x.stride * s
        indice_dict = {n: d for n, d in indice_dict.items() if n != key}  # spconv recomputes these pairs
    elif kind == "up":
        out_stride = x.stride // s
        key = f"down{out_stride}k{k}s{s}p{p}"
        if x.stride % s or level.source != key or key not in indice_dict:
            raise ValueError(
                f"no spconv down-sampling conv {key} produced level {x.stride}: an inverse conv must mirror "
                "a SparseConv3d with the same kernel_size/stride/padding, on the same backend, applied to "
                "the same input"
            )
    else:
        raise ValueError(f"unknown conv kind {kind!r}; expected 'subm', 'down' or 'up'")
    inp = sp.SparseConvTensor(
        x.feats, level.indices, level.spatial_shape, level.batch_size, indice_dict=indice_dict
    )
    cout, cin = int(weight.shape[0]), int(weight.shape[-1])
    op = sp.conv.SparseConvolutionBase(
        3, cin, cout, k, s, p, bias=False, subm=kind == "subm", inverse=kind == "up", indice_key=key
    )
    if list(weight.shape) != list(op.weight_shape):
        raise ValueError(f"spconv expects a weight of shape {op.weight_shape}, got {list(weight.shape)}")
    # training=True selects spconv's differentiable path (its CUDA inference path has no backward)
    out = op._conv_forward(torch.is_grad_enabled(), inp, weight.to(x.feats.dtype), None)
    h.indice_dict = out.indice_dict
    if kind == "down":
        _register_down(h, x.cache, level, out, key, out_stride, s)
    features: Tensor = out.features
    return features, out_stride


def _register_down(
    h: SpconvHierarchy, cache: KernelMapCache, src: SpconvLevel, out: Any, key: str, out_stride: int, s: int
) -> None:
    """Record (or, on a second pass, check) the level made by the spconv down conv ``key``."""
    known = h.levels.get(out_stride)
    if known is not None and known.source == key:
        if not torch.equal(known.indices, out.indices):
            raise RuntimeError(f"spconv returned the output sites of {key} in another order than before")
        return
    if known is not None or out_stride in cache.strides:
        raise ValueError(
            f"level with stride {out_stride} already exists; a second strided conv ({key}, spconv) to the "
            "same level would give other coordinates"
        )
    if bool((src.shift % s != 0).any()):
        raise ValueError(
            f"spconv: cannot down-sample to level {out_stride}: the coordinate shift {src.shift.tolist()} "
            f"of its input level (a multiple of GRID_ALIGN={GRID_ALIGN} where spconv first saw the "
            f"hierarchy) is not a multiple of {s}"
        )
    shift = torch.div(src.shift, s, rounding_mode="floor")
    coords = out.indices[:, [0, 3, 2, 1]]
    coords[:, 1:] -= shift.to(coords.dtype)
    cache.register_level(out_stride, coords)
    h.levels[out_stride] = SpconvLevel(out.indices, list(out.spatial_shape), src.batch_size, shift, key)
