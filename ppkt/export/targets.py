"""Export targets: ppkt student weights <-> another framework's checkpoint, key by key, layout by layout.

A target (:data:`TARGETS`) names the framework's network that a ppkt student preset reproduces layer for
layer, checks the student's architecture (:meth:`Target.check_arch`: ``WeightsError`` otherwise), maps
every state-dict key and converts every tensor (:mod:`ppkt.export.layouts`), and wraps the result in the
framework's checkpoint format. The key map is built from the student's own state dict, so it covers every
key or fails; its inverse reads the framework's files back (``--init``).

``pointcept`` -- Pointcept's ``SpUNet-v1m1`` (``pointcept/models/sparse_unet/spconv_unet_v1m1.py``,
``SpUNetBase``), student preset ``spunet_v1m1``:

=====================================  ===========================================================
ppkt (``SparseUNet``, ``down_expands``)  Pointcept (``module.backbone.`` + …)
=====================================  ===========================================================
``stem.conv`` / ``stem.bn``            ``conv_input.0`` (SubMConv3d k5) / ``conv_input.1``
``down.i.conv`` / ``down.i.bn``        ``down.i.0`` (SparseConv3d k2 s2) / ``down.i.1``
``enc.i.b.{conv1,bn1,conv2,bn2}``      ``enc.i.block{b}.{conv1,bn1,conv2,bn2}``
``*.downsample.0`` / ``.1``            ``*.proj.0`` (SubMConv3d k1) / ``*.proj.1``
``up.j.conv`` / ``up.j.bn``            ``up.{3-j}.0`` (SparseInverseConv3d k2) / ``up.{3-j}.1``
``dec.j.b.*``                          ``dec.{3-j}.block{b}.*``
``head`` (SubMConv3d k1) or the        ``final`` (SubMConv3d k1, bias)
run's linear head
=====================================  ===========================================================

Pointcept decodes with ``for s in reversed(range(4))``, so its ``up[s]``/``dec[s]`` at stride ``2^s`` are
ppkt's decoder level ``3 - s``; both concatenate ``(upsampled, skip)`` in that order. Checkpoint:
``{"state_dict": {"module.backbone.<key>": …}}`` -- the keys of a DDP-wrapped ``DefaultSegmentor`` as
Pointcept's trainer saves them; its ``CheckpointLoader`` hook adds ``module.`` to keys without it and strips
it again on one GPU, so the default hook (``keywords=""``) loads it into ``model.backbone``.

``minkunet34c`` -- MinkowskiEngine's ``MinkUNet34C`` (``examples/minkunet.py``; SLidR's
``model/minkunet.py`` is the same network), student presets ``minkunet34c`` / ``res16unet34c``: ``stem`` ->
``conv0p1s1``/``bn0``, ``down.i`` -> ``conv{i+1}p{2^i}s2``/``bn{i+1}``, ``enc.i`` -> ``block{i+1}``,
``up.j`` -> ``convtr{4+j}p{2^(4-j)}s2``/``bntr{4+j}``, ``dec.j`` -> ``block{5+j}``, ``bn*`` inside blocks ->
``norm*``, every BatchNorm wrapped as ``<name>.bn.*`` (``MinkowskiBatchNorm``), every conv weight a
``kernel``, the head -> ``final`` (``kernel [Cin, Cout]``, ``bias [1, Cout]``). Checkpoint:
``{"model_points": state_dict}`` -- SLidR's pretraining checkpoint, read by its downstream
``model_builder`` (the images network, ``model_images``, is not written). Key names and shapes are those of
MinkowskiEngine 0.5's modules as remembered (``MinkowskiConvolution.kernel``, bias ``[1, Cout]``); they
could not be checked against an installed MinkowskiEngine here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ppkt.errors import WeightsError
from ppkt.export import layouts
from ppkt.models.state import check_state_dict

#: a converted tensor and its inverse
Convert = tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]

_IDENTITY: Convert = (lambda t: t, lambda t: t)


@dataclass(frozen=True)
class Target:
    """One framework's network reproduced by ppkt student presets."""

    name: str
    #: the framework's network, for messages
    network: str
    #: ppkt student presets with this architecture
    presets: tuple[str, ...]
    #: ``SparseUNet.arch`` entries the student must have (the others are free)
    arch: Mapping[str, Any]
    #: the key of the state dict in the checkpoint file
    container: str
    #: prefix of every key inside ``container``
    prefix: str
    #: ``ppkt key -> (target key, (to, from))``
    map_key: Callable[[str, Mapping[str, Tensor]], tuple[str, Convert]]
    notes: tuple[str, ...] = field(default=())

    def check_arch(self, arch: Mapping[str, Any], what: str) -> None:
        """``WeightsError`` unless ``arch`` (a ``SparseUNet.arch``) has every entry this target fixes."""
        wrong = {k: arch.get(k) for k, v in self.arch.items() if _norm(arch.get(k)) != _norm(v)}
        if wrong:
            want = {k: self.arch[k] for k in wrong}
            raise WeightsError(
                f"{what} is not {self.network}: it has {wrong}, the target needs {want}; train the student "
                f"preset {' or '.join(repr(p) for p in self.presets)} (student.name=...) to export to "
                f"{self.name!r}"
            )

    def key_map(self, state: Mapping[str, Tensor]) -> dict[str, tuple[str, Convert]]:
        """``ppkt key -> (target key, converters)`` for every key of the ppkt state dict ``state``."""
        out = {k: self.map_key(k, state) for k in state}
        targets = [t for t, _ in out.values()]
        if len(set(targets)) != len(targets):  # pragma: no cover - a bug in a key map
            raise AssertionError(f"{self.name}: two ppkt keys map to one target key")
        return out

    def export_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The target's state dict (keys without :attr:`prefix`) of the ppkt state dict ``state``."""
        return {t: conv[0](state[k]) for k, (t, conv) in self.key_map(state).items()}

    def import_state(
        self, theirs: Mapping[str, Tensor], expected: Mapping[str, Tensor], what: str, target: str
    ) -> dict[str, Tensor]:
        """The ppkt state dict (keys and shapes of ``expected``) of the target's state dict ``theirs``;
        ``WeightsError`` naming the target's keys when they do not match."""
        kmap = self.key_map(expected)
        want = {t: conv[0](expected[k]) for k, (t, conv) in kmap.items()}
        check_state_dict(theirs, want, what=what, target=target, source="file")
        return {k: conv[1](theirs[t]).to(expected[k].dtype) for k, (t, conv) in kmap.items()}

    def wrap(self, state: Mapping[str, Tensor]) -> dict[str, Any]:
        return {self.container: {self.prefix + k: v for k, v in state.items()}}


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _kernel_size(key: str, state: Mapping[str, Tensor]) -> int:
    return int(state[key].shape[1]) if state[key].ndim == 5 else 1


def _block_key(rest: str, bn_names: Mapping[str, str], conv: Callable[[str], str]) -> str:
    """``conv1.weight`` / ``bn1.running_mean`` / ``downsample.0.weight`` … inside a BasicBlock."""
    head, _, tail = rest.partition(".")
    if head in ("conv1", "conv2"):
        return conv(head)
    if head in ("bn1", "bn2"):
        return f"{bn_names[head]}.{tail}"
    raise KeyError(rest)


# --- Pointcept SpUNet-v1m1 ----------------------------------------------------------------------------
_PC_CONV: Convert = (layouts.to_spconv2_xyz, layouts.from_spconv2_xyz)
_PC_1X1: Convert = (layouts.to_spconv2_1x1, layouts.from_spconv2_1x1)


def _pc_linear() -> Convert:
    # a run's nn.Linear head [Cout, Cin] <-> Pointcept's final SubMConv3d k1 [Cout, 1, 1, 1, Cin]
    def to(w: Tensor) -> Tensor:
        return layouts.to_spconv2_1x1(w)

    def back(w: Tensor) -> Tensor:
        return layouts.from_spconv2_1x1(w).reshape(w.shape[0], w.shape[-1])

    return to, back


def _pointcept_key(key: str, state: Mapping[str, Tensor]) -> tuple[str, Convert]:
    conv = _PC_CONV if key.endswith("weight") and _kernel_size(key, state) > 1 else _PC_1X1
    m = re.fullmatch(r"stem\.(conv|bn)\.(.+)", key)
    if m:
        return f"conv_input.{0 if m[1] == 'conv' else 1}.{m[2]}", conv if m[1] == "conv" else _IDENTITY
    m = re.fullmatch(r"(down|up)\.(\d)\.(conv|bn)\.(.+)", key)
    if m:
        i = int(m[2]) if m[1] == "down" else 3 - int(m[2])
        is_conv = m[3] == "conv"
        return f"{m[1]}.{i}.{0 if is_conv else 1}.{m[4]}", conv if is_conv else _IDENTITY
    m = re.fullmatch(r"(enc|dec)\.(\d)\.(\d+)\.(.+)", key)
    if m:
        i = int(m[2]) if m[1] == "enc" else 3 - int(m[2])
        rest = m[4]
        d = re.fullmatch(r"downsample\.([01])\.(.+)", rest)
        if d:
            return f"{m[1]}.{i}.block{m[3]}.proj.{d[1]}.{d[2]}", _PC_1X1 if d[1] == "0" else _IDENTITY
        is_conv = rest.startswith("conv")
        return f"{m[1]}.{i}.block{m[3]}.{rest}", conv if is_conv else _IDENTITY
    m = re.fullmatch(r"head\.(weight|bias)", key)
    if m:
        return f"final.{m[1]}", _PC_1X1 if m[1] == "weight" else _IDENTITY
    m = re.fullmatch(r"linear\.(weight|bias)", key)  # the run's head (ppkt.models.heads), exported as final
    if m:
        return f"final.{m[1]}", _pc_linear() if m[1] == "weight" else _IDENTITY
    raise WeightsError(f"pointcept: no SpUNet-v1m1 key for the ppkt student key {key!r}")


# --- MinkowskiEngine MinkUNet34C ----------------------------------------------------------------------
def _me_conv(k: int) -> Convert:
    return (layouts.to_minkowski, lambda t: layouts.from_minkowski(t, k))


def _me_linear() -> Convert:
    return (lambda w: w.t().contiguous(), lambda w: w.t().contiguous())


def _me_bias() -> Convert:
    return (lambda b: b.reshape(1, -1).contiguous(), lambda b: b.reshape(-1).contiguous())


_ME_DOWN = ["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]
_ME_UP = ["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]


def _minkunet_key(key: str, state: Mapping[str, Tensor]) -> tuple[str, Convert]:
    def conv_of(name: str) -> tuple[str, Convert]:
        return f"{name}.kernel", _me_conv(_kernel_size(key, state))

    m = re.fullmatch(r"stem\.(conv|bn)\.(.+)", key)
    if m:
        return conv_of("conv0p1s1") if m[1] == "conv" else (f"bn0.bn.{m[2]}", _IDENTITY)
    m = re.fullmatch(r"(down|up)\.(\d)\.(conv|bn)\.(.+)", key)
    if m:
        i = int(m[2])
        if m[3] == "conv":
            return conv_of((_ME_DOWN if m[1] == "down" else _ME_UP)[i])
        return (f"bn{i + 1}.bn.{m[4]}" if m[1] == "down" else f"bntr{4 + i}.bn.{m[4]}"), _IDENTITY
    m = re.fullmatch(r"(enc|dec)\.(\d)\.(\d+)\.(.+)", key)
    if m:
        block = f"block{int(m[2]) + (1 if m[1] == 'enc' else 5)}.{m[3]}"
        rest = m[4]
        d = re.fullmatch(r"downsample\.([01])\.(.+)", rest)
        if d:
            if d[1] == "0":
                return conv_of(f"{block}.downsample.0")
            return f"{block}.downsample.1.bn.{d[2]}", _IDENTITY
        c = re.fullmatch(r"conv([12])\.weight", rest)
        if c:
            return conv_of(f"{block}.conv{c[1]}")
        b = re.fullmatch(r"bn([12])\.(.+)", rest)
        if b:
            return f"{block}.norm{b[1]}.bn.{b[2]}", _IDENTITY
    m = re.fullmatch(r"head\.(weight|bias)", key)
    if m:
        return ("final.kernel", _me_conv(1)) if m[1] == "weight" else ("final.bias", _me_bias())
    m = re.fullmatch(r"linear\.(weight|bias)", key)
    if m:
        return ("final.kernel", _me_linear()) if m[1] == "weight" else ("final.bias", _me_bias())
    raise WeightsError(f"minkunet34c: no MinkUNet34C key for the ppkt student key {key!r}")


TARGETS: dict[str, Target] = {
    "pointcept": Target(
        name="pointcept",
        network="Pointcept's SpUNet-v1m1",
        presets=("spunet_v1m1",),
        arch={"stem_kernel": 5, "bn_eps": 1e-3, "down_expands": True},
        container="state_dict",
        prefix="module.backbone.",
        map_key=_pointcept_key,
    ),
    "minkunet34c": Target(
        name="minkunet34c",
        network="MinkowskiEngine's / SLidR's MinkUNet34C",
        presets=("minkunet34c", "res16unet34c"),
        arch={
            "planes": (32, 64, 128, 256, 256, 128, 96, 96),
            "layers": (2, 3, 4, 6, 2, 2, 2, 2),
            "stem_channels": 32,
            "stem_kernel": 5,
            "bn_eps": 1e-5,
            "down_expands": False,
        },
        container="model_points",
        prefix="",
        map_key=_minkunet_key,
    ),
}


def get_target(name: str) -> Target:
    """The export target ``name`` (``WeightsError`` listing the known ones)."""
    if name not in TARGETS:
        raise WeightsError(
            f"unknown export target {name!r}; known: {sorted(TARGETS)} (OpenPCDet's VoxelBackBone8x and "
            "mmdet3d's MinkUNetBackbone have no ppkt student with their exact architecture yet)"
        )
    return TARGETS[name]
