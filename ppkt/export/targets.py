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

``minkunet34c`` -- MinkowskiEngine's ``MinkUNet34C`` and SLidR's ``Res16UNet34C`` (the same module tree),
student presets ``minkunet34c`` / ``res16unet34c`` (5³ stem, MinkowskiEngine's ``examples/minkunet.py``)
and ``slidr_res16unet34c`` (3³ stem: SLidR's ``conv0p1s1`` takes ``config["kernel_size"]``, 3 in its
configs). ``stem`` -> ``conv0p1s1``/``bn0``, ``down.i`` -> ``conv{i+1}p{2^i}s2``/``bn{i+1}``, ``enc.i`` ->
``block{i+1}``, ``up.j`` -> ``convtr{4+j}p{2^(4-j)}s2``/``bntr{4+j}``, ``dec.j`` -> ``block{5+j}``,
``bn*`` inside blocks -> ``norm*``, every BatchNorm wrapped as ``<name>.bn.*``, every conv weight a
``kernel``, the head -> ``final`` (``kernel [Cin, Cout]``, ``bias [1, Cout]``). Checkpoint:
``{"model_points": state_dict}`` (SLidR's pretraining and downstream files; its downstream
``model_builder`` reads ``model_points`` or ``state_dict``). A SLidR classifier has one output per label
id *including* the ignored label 0 (``model_n_out: 17`` for nuScenes' 16 classes; its validation zeroes
output 0), so ppkt writes and reads classifiers for this target with that extra output 0
(:attr:`Target.ignored_outputs`).

Read from the sources (search tool, 2026-12): ``MinkowskiConvolutionBase.__init__``
(``MinkowskiEngine/MinkowskiConvolution.py``): ``kernel = Parameter([K, Cin, Cout])``, ``[Cin, Cout]`` when
``kernel_volume == 1`` and the stride is 1, ``bias = Parameter([1, Cout])``, ``out = in @ kernel[k]``;
``MinkowskiBatchNorm`` (``MinkowskiNormalization.py``) holds ``self.bn = torch.nn.BatchNorm1d(eps=1e-5)``;
``examples/minkunet.py`` and SLidR's ``model/res16unet.py`` / ``model/resnet.py`` (``_make_layer``:
``downsample = Sequential(conv k1, norm)``) / ``model/modules/resnet_block.py`` (``conv1, norm1, conv2,
norm2, downsample``) / ``model/modules/common.py`` (``get_norm`` -> ``MinkowskiBatchNorm(momentum=…)``);
the kernel-offset order in :mod:`ppkt.export.layouts`.

``mmdet3d`` -- mmdet3d's ``MinkUNetBackbone`` with ``sparseconv_backend='spconv'``
(``mmdet3d/models/backbones/minkunet_backbone.py``), student preset ``mmdet3d_minkunet34``
(``encoder_blocks=[2, 3, 4, 6]``, the ``minkunet34_w32_spconv_*`` configs): ``stem`` / ``stem2`` ->
``conv_input.0`` / ``conv_input.1`` (``SparseSequential(SubMConv3d k3, BatchNorm1d, ReLU)``), ``down.i`` ->
``encoder.i.0``, ``enc.i.b`` -> ``encoder.i.{b+1}`` (``SparseBasicBlock``: mmdet's ``BasicBlock`` names
``conv1, bn1, conv2, bn2, downsample``), ``up.j`` -> ``decoder.j.0`` (``SparseInverseConv3d``), ``dec.j.b``
-> ``decoder.j.1.b``; the classifier -> the segmentor's ``decode_head.conv_seg`` (``MinkUNetHead``: an
``nn.Linear``). Checkpoint: mmengine's ``{"state_dict": {"backbone.…", "decode_head.conv_seg.…"}}``.
Kernels: voxel indices ``(batch, x, y, z)`` as Pointcept (batch first: ``MinkUNetBackbone.forward``; ``x, y,
z`` order: mmdet3d's ``minkunet`` voxelization as remembered, not re-read), *but* mmdet3d's spconv-2 loader
(``mmdet3d/models/layers/spconv/overwrite_spconv/write_spconv2.py``, ``_load_from_state_dict``) permutes
every conv tensor ``[a, b, c, d, e] -> [e, a, b, c, d]`` unless the file's ``_metadata`` says version 2 --
which a plain state dict never does -- so the file holds spconv 1.x's ``[kx, ky, kz, Cin, Cout]`` and the
1×1×1 kernels the permutation of spconv 2.3's transposed ``view(Cin, Cout)`` layout.
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
    #: ``None``: the classifier is ``final.*`` under :attr:`prefix` (in the backbone); else the prefix of
    #: the classifier's keys at the model root (mmdet3d: ``decode_head.conv_seg.``), beside ``backbone.``
    head_prefix: str | None = None
    #: classifier outputs before the one of class id 1 (SLidR: output 0 is the ignored label 0)
    ignored_outputs: int = 0
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
        """The checkpoint dict: every key under :attr:`container` with its prefix (the classifier's
        ``final.*`` under :attr:`head_prefix` when the target keeps it outside the backbone)."""

        def full(k: str) -> str:
            if self.head_prefix is not None and k.startswith("final."):
                return self.head_prefix + k[len("final.") :]
            return self.prefix + k

        return {self.container: {full(k): v for k, v in state.items()}}


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


# --- mmdet3d MinkUNetBackbone (spconv) ----------------------------------------------------------------
def _mmdet3d_conv(w: Tensor) -> Tensor:
    """ppkt ``[Cout, kz, ky, kx, Cin]`` -> the file tensor that mmdet3d's loader permutes into spconv 2's
    ``[Cout, kx, ky, kz, Cin]`` (1×1×1: spconv 2.3's transposed layout) -- ``[kx, ky, kz, Cin, Cout]``."""
    p = layouts.to_spconv2_1x1(w) if w.shape[1] == 1 else layouts.to_spconv2_xyz(w)
    return p.permute(1, 2, 3, 4, 0).contiguous()


def _mmdet3d_conv_back(t: Tensor) -> Tensor:
    p = t.permute(4, 0, 1, 2, 3).contiguous()  # what write_spconv2._load_from_state_dict loads
    return layouts.from_spconv2_1x1(p) if p.shape[1] == 1 else layouts.from_spconv2_xyz(p)


_MM_CONV: Convert = (_mmdet3d_conv, _mmdet3d_conv_back)


def _mmdet3d_key(key: str, state: Mapping[str, Tensor]) -> tuple[str, Convert]:
    m = re.fullmatch(r"stem(2?)\.(conv|bn)\.(.+)", key)
    if m:
        i = 1 if m[1] else 0
        is_conv = m[2] == "conv"
        return f"conv_input.{i}.{0 if is_conv else 1}.{m[3]}", _MM_CONV if is_conv else _IDENTITY
    m = re.fullmatch(r"(down|up)\.(\d)\.(conv|bn)\.(.+)", key)
    if m:
        part = "encoder" if m[1] == "down" else "decoder"
        is_conv = m[3] == "conv"
        return f"{part}.{m[2]}.0.{0 if is_conv else 1}.{m[4]}", _MM_CONV if is_conv else _IDENTITY
    m = re.fullmatch(r"(enc|dec)\.(\d)\.(\d+)\.(.+)", key)
    if m:
        block = f"encoder.{m[2]}.{int(m[3]) + 1}" if m[1] == "enc" else f"decoder.{m[2]}.1.{m[3]}"
        rest = m[4]
        is_conv = rest.startswith("conv") or rest == "downsample.0.weight"
        return f"{block}.{rest}", _MM_CONV if is_conv else _IDENTITY
    m = re.fullmatch(r"head\.(weight|bias)", key)  # the student's 1×1 head -> the decode head's nn.Linear
    if m:
        if m[1] == "bias":
            return "final.bias", _IDENTITY
        w = state[key]
        return "final.weight", (
            lambda t: t.reshape(t.shape[0], t.shape[-1]).contiguous(),
            lambda t: t.reshape(w.shape).contiguous(),
        )
    m = re.fullmatch(r"linear\.(weight|bias)", key)
    if m:
        return f"final.{m[1]}", _IDENTITY
    raise WeightsError(f"mmdet3d: no MinkUNetBackbone key for the ppkt student key {key!r}")


TARGETS: dict[str, Target] = {
    "pointcept": Target(
        name="pointcept",
        network="Pointcept's SpUNet-v1m1",
        presets=("spunet_v1m1",),
        arch={"stem_kernel": 5, "stem_layers": 1, "bn_eps": 1e-3, "down_expands": True},
        container="state_dict",
        prefix="module.backbone.",
        map_key=_pointcept_key,
    ),
    "minkunet34c": Target(
        name="minkunet34c",
        network="MinkowskiEngine's MinkUNet34C / SLidR's Res16UNet34C",
        presets=("minkunet34c", "res16unet34c", "slidr_res16unet34c"),
        arch={
            "planes": (32, 64, 128, 256, 256, 128, 96, 96),
            "layers": (2, 3, 4, 6, 2, 2, 2, 2),
            "stem_channels": 32,
            "stem_layers": 1,
            "bn_eps": 1e-5,
            "down_expands": False,
        },
        container="model_points",
        prefix="",
        map_key=_minkunet_key,
        ignored_outputs=1,
    ),
    "mmdet3d": Target(
        name="mmdet3d",
        network="mmdet3d's MinkUNetBackbone (spconv backend)",
        presets=("mmdet3d_minkunet34",),
        arch={"stem_kernel": 3, "stem_layers": 2, "bn_eps": 1e-5, "down_expands": False},
        container="state_dict",
        prefix="backbone.",
        map_key=_mmdet3d_key,
        head_prefix="decode_head.conv_seg.",
    ),
}


#: why no ppkt student is OpenPCDet's VoxelBackBone8x (pcdet/models/backbones_3d/spconv_backbone.py)
OPENPCDET_REFUSAL = (
    "OpenPCDet's VoxelBackBone8x is no ppkt student: it is an encoder without a decoder (its outputs are at "
    "strides 1-8 and the BEV tensor of conv_out, while ppkt's students are U-Nets returning features at "
    "every input voxel, which pretraining pairs with pixels), and it uses anisotropic convolutions (conv4: "
    "padding (0, 1, 1); conv_out: kernel (3, 1, 1), stride (2, 1, 1)) that ppkt's cubic kernels with one "
    "stride and padding cannot express; its k3 s2 p1 down convs alone would be possible"
)


def get_target(name: str) -> Target:
    """The export target ``name`` (``WeightsError`` listing the known ones)."""
    if name not in TARGETS:
        raise WeightsError(f"unknown export target {name!r}; known: {sorted(TARGETS)} ({OPENPCDET_REFUSAL})")
    return TARGETS[name]
