"""Residual sparse-conv U-Net student (MinkUNet / Res16UNet style) on :mod:`ppkt.sparse`'s convolutions.

Input: a :class:`~ppkt.sparse.SparseTensor` with features ``[M, in_channels]`` at stride 1.
Output: a dense tensor ``[M, out_channels]`` of per-voxel features at the input's coordinates, **in the
input's row order**.

Layout (``planes = (p1, ..., p8)``, ``layers = (n1, ..., n8)``, ``s = stem_channels``)::

    stem     subm(k=stem_kernel) in -> s, BN, ReLU (twice with stem_layers=2)  stride 1   x0 [M, s]
    enc i    down k2s2 (C -> C), BN, ReLU; n_i BasicBlocks -> p_i   i = 1..4   stride 2^i  e_i
    dec j    up k2s2 -> p_{4+j}, BN, ReLU; cat skip; n_{4+j} blocks  j = 1..4  stride 2^(4-j)
    head     optional 1x1 conv -> out_channels (only when ``out_channels`` is given)

The skip of decoder level ``j`` is ``e_{4-j}`` (``x0`` for ``j = 4``), so the last decoder level runs at
the input resolution; its channel count (``p8``, or ``out_channels`` with a head) is ``out_channels``.

With ``down_expands=True`` the down conv of level ``i`` maps ``C -> p_i`` and the level's blocks keep
``p_i`` (Pointcept's ``SpUNet-v1m1``); by default it keeps ``C`` and the first block projects (MinkUNet).
Presets ``spunet_v1m1``, ``minkunet34c`` (``slidr_res16unet34c``: its 3³ stem) and ``mmdet3d_minkunet34`` are
layer-for-layer Pointcept's ``SpUNet-v1m1``, MinkowskiEngine's ``MinkUNet34C`` (SLidR's ``Res16UNet34C``)
and mmdet3d's ``MinkUNetBackbone`` (two-conv stem): ``ppkt export`` (:mod:`ppkt.export`) writes their
weights in those frameworks' checkpoint formats, and ``--init`` / ``ppkt evaluate`` read them back.

The sparse-conv backend (``torch`` or ``spconv``) is an attribute of each convolution
(:func:`ppkt.sparse.set_backend`), not of the network: the architecture is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from ppkt.models.student.blocks import ConvBNReLU, make_layer
from ppkt.sparse import SparseTensor, SubMConv3d, set_backend, sparse_cat


class SparseUNet(nn.Module):
    """4-level residual sparse U-Net: ``forward(SparseTensor [M, in_channels]) -> Tensor [M, out_channels]``.

    Args:
        in_channels: input feature channels.
        planes: 8 channel counts, 4 encoder then 4 decoder levels.
        layers: 8 BasicBlock counts per level.
        stem_channels: channels of the full-resolution stem.
        stem_kernel: odd kernel size of the stem's submanifold conv(s).
        stem_layers: 1, or 2 for a second ``subm(stem_kernel)`` conv + BN + ReLU in the stem (``stem2``;
            mmdet3d's ``MinkUNetBackbone``).
        out_channels: if given, a final 1x1 conv (with bias) maps ``planes[7] -> out_channels``.
        bn_momentum: momentum of every BatchNorm.
        bn_eps: eps of every BatchNorm.
        down_expands: the down convs change the channels (``C -> p_i``; Pointcept) instead of the first
            block of each encoder level (MinkUNet).
        backend: sparse-conv backend of every convolution, ``"torch"`` (default) or ``"spconv"``
            (:data:`ppkt.sparse.BACKENDS`); the parameters and state dict are the same for both.
    """

    def __init__(
        self,
        in_channels: int,
        planes: Sequence[int] = (32, 64, 128, 256, 256, 128, 96, 96),
        layers: Sequence[int] = (2, 3, 4, 6, 2, 2, 2, 2),
        stem_channels: int = 32,
        stem_kernel: int = 5,
        out_channels: int | None = None,
        bn_momentum: float = 0.1,
        backend: str = "torch",
        bn_eps: float = 1e-5,
        down_expands: bool = False,
        stem_layers: int = 1,
    ) -> None:
        super().__init__()
        planes, layers = tuple(planes), tuple(layers)
        if len(planes) != 8 or len(layers) != 8:
            raise ValueError(f"planes and layers need 8 entries each, got {len(planes)} and {len(layers)}")
        if in_channels < 1 or stem_channels < 1 or min(planes) < 1:
            raise ValueError(
                f"channel counts must be positive: in={in_channels} stem={stem_channels} {planes}"
            )
        if stem_layers not in (1, 2):
            raise ValueError(f"stem_layers must be 1 or 2, got {stem_layers}")
        self.in_channels = in_channels
        self.planes, self.layers = planes, layers
        #: the architecture (every argument but ``backend``), checked by :mod:`ppkt.export`
        self.arch: dict[str, Any] = dict(
            in_channels=in_channels, planes=planes, layers=layers, stem_channels=stem_channels,
            stem_kernel=stem_kernel, out_channels=out_channels, bn_eps=bn_eps, down_expands=down_expands,
            stem_layers=stem_layers,
        )  # fmt: skip
        bn = {"bn_momentum": bn_momentum, "bn_eps": bn_eps}
        self.stem = ConvBNReLU(in_channels, stem_channels, "subm", stem_kernel, 1, **bn)
        self.stem2: ConvBNReLU | None = None
        if stem_layers == 2:
            self.stem2 = ConvBNReLU(stem_channels, stem_channels, "subm", stem_kernel, 1, **bn)

        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        c = stem_channels
        skip_channels = [stem_channels]
        for i in range(4):
            d = planes[i] if down_expands else c
            self.down.append(ConvBNReLU(c, d, "down", 2, 2, **bn))
            self.enc.append(make_layer(d, planes[i], layers[i], **bn))
            c = planes[i]
            skip_channels.append(c)

        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for j in range(4):
            p = planes[4 + j]
            self.up.append(ConvBNReLU(c, p, "up", 2, 2, **bn))
            self.dec.append(make_layer(p + skip_channels[3 - j], p, layers[4 + j], **bn))
            c = p

        self.head: SubMConv3d | None = None
        if out_channels is not None:
            self.head = SubMConv3d(c, out_channels, 1, bias=True)
            c = out_channels
        self.out_channels: int = c
        set_backend(self, backend)

    def forward(self, x: SparseTensor) -> Tensor:
        if x.num_channels != self.in_channels:
            raise ValueError(f"SparseUNet expects {self.in_channels} input channels, got {x.num_channels}")
        y = self.stem(x)
        if self.stem2 is not None:
            y = self.stem2(y)
        skips = [y]
        for down, enc in zip(self.down, self.enc):
            y = enc(down(y))
            skips.append(y)
        skips.pop()  # the deepest level feeds the decoder directly
        for up, dec in zip(self.up, self.dec):
            y = dec(sparse_cat([up(y), skips.pop()]))
        if self.head is not None:
            y = self.head(y)
        return y.feats


STUDENT_PRESETS: dict[str, dict[str, Any]] = {
    # CPU default: one block per level, narrow channels.
    "unet_small": {
        "planes": (16, 32, 64, 128, 64, 48, 32, 32),
        "layers": (1, 1, 1, 1, 1, 1, 1, 1),
        "stem_channels": 16,
        "stem_kernel": 3,
    },
    # Res16UNet34C (MinkowskiEngine / PPKT's 3D backbone).
    "res16unet34c": {
        "planes": (32, 64, 128, 256, 256, 128, 96, 96),
        "layers": (2, 3, 4, 6, 2, 2, 2, 2),
        "stem_channels": 32,
        "stem_kernel": 5,
    },
    # Pointcept's SpUNet-v1m1 (pointcept/models/sparse_unet/spconv_unet_v1m1.py, default arguments):
    # channel-changing down convs, BN eps 1e-3 / momentum 0.01
    "spunet_v1m1": {
        "planes": (32, 64, 128, 256, 256, 128, 96, 96),
        "layers": (2, 3, 4, 6, 2, 2, 2, 2),
        "stem_channels": 32,
        "stem_kernel": 5,
        "bn_eps": 1e-3,
        "bn_momentum": 0.01,
        "down_expands": True,
    },
}


# MinkowskiEngine's MinkUNet34C (examples/minkunet.py: conv0p1s1 kernel_size=5): the same network as
# res16unet34c, named as its target for `ppkt export --to minkunet34c`
STUDENT_PRESETS["minkunet34c"] = dict(STUDENT_PRESETS["res16unet34c"])
# SLidR's Res16UNet34C (valeoai/SLidR model/res16unet.py): conv0p1s1 takes config["kernel_size"], 3 in
# every SLidR config (config/slidr_minkunet.yaml, semseg_nuscenes.yaml), so its released weights have a 3³
# stem; the rest is MinkUNet34C (same module names, MinkowskiEngine layers)
STUDENT_PRESETS["slidr_res16unet34c"] = {**STUDENT_PRESETS["res16unet34c"], "stem_kernel": 3}
# mmdet3d's MinkUNetBackbone with encoder_blocks=[2, 3, 4, 6] (configs/minkunet/minkunet34_w32_*): two
# 3³ stem convs (conv_input), k2s2 down convs keeping the channels, BasicBlocks, BatchNorm1d defaults
STUDENT_PRESETS["mmdet3d_minkunet34"] = {
    **STUDENT_PRESETS["res16unet34c"],
    "stem_kernel": 3,
    "stem_layers": 2,
}


def _make_preset(name: str, in_channels: int, **overrides: Any) -> SparseUNet:
    return SparseUNet(in_channels, **{**STUDENT_PRESETS[name], **overrides})


STUDENTS: dict[str, Callable[..., SparseUNet]] = {
    name: partial(_make_preset, name) for name in STUDENT_PRESETS
}


def build_student(name: str, in_channels: int, **overrides: Any) -> SparseUNet:
    """Build the student preset ``name`` (see :data:`STUDENTS`); ``overrides`` replace preset arguments."""
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; known students: {sorted(STUDENTS)}")
    return STUDENTS[name](in_channels, **overrides)
