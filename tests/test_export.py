"""Portable weights (ppkt.export): Pointcept / MinkUNet34C presets, layouts, export and import.

Pointcept: numerically, against ``SpUNet-v1m1`` written below from spconv 2 layers (copied from
``pointcept/models/sparse_unet/spconv_unet_v1m1.py``), in float64 to 1e-9. MinkowskiEngine and TorchSparse
cannot be installed here: their key lists and shapes are checked against the lists written below from their
sources, and their kernel-offset orders against reference convolutions following those orders.

MinkowskiEngine facts, each read in its source with the search tool (2026-12; NVIDIA/MinkowskiEngine and
valeoai/SLidR):

* key names: ``examples/minkunet.py`` (``conv0p1s1`` k5, ``bn0``, ``conv{1..4}p*s2`` k2 s2, ``block1..8``,
  ``convtr{4..7}p*s2`` = ``MinkowskiConvolutionTranspose`` k2 s2, ``bntr4..7``, ``final`` k1 with bias;
  ``ME.cat(out, skip)``: upsampled first) and SLidR's ``model/res16unet.py`` (the same names; ``conv0p1s1``
  of ``config["kernel_size"]`` = 3 in ``config/slidr_minkunet.yaml`` and ``config/semseg_nuscenes.yaml``);
* block names: ``MinkowskiEngine/modules/resnet_block.py`` and SLidR's ``model/modules/resnet_block.py``
  (``conv1, norm1, conv2, norm2, downsample``), ``_make_layer`` in SLidR's ``model/resnet.py``
  (``downsample = nn.Sequential(conv k1, norm)``: ``downsample.0.kernel``, ``downsample.1.bn.*``);
* BN: ``MinkowskiEngine/MinkowskiNormalization.py`` (``MinkowskiBatchNorm.bn = torch.nn.BatchNorm1d``,
  eps 1e-5) -> ``bn0.bn.weight`` …; SLidR's ``model/modules/common.py`` (``get_norm`` -> that module);
* kernel tensors: ``MinkowskiEngine/MinkowskiConvolution.py`` (``MinkowskiConvolutionBase.__init__``:
  ``kernel [kernel_volume, Cin, Cout]``, ``[Cin, Cout]`` when the volume is 1 at stride 1, ``bias [1,
  Cout]``; ``out = in.F.mm(kernel)`` for 1×1) and ``MinkowskiKernelGenerator.py``;
* offset order, odd and even kernels: ``src/kernel_region.hpp`` (``coordinate_at``: ``kernel_index % k`` on
  the first spatial axis first; odd ``(i - k // 2) * stride``, even ``i * stride``);
* transposed convs: ``src/coordinate_map_manager.cpp`` (``kernel_map`` with ``is_transpose``: the forward
  map from the fine to the coarse map, region at the fine stride, in/out swapped) -- so the up conv uses
  the same offset enumeration (``reference_transposed``).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.export import detect_format, export_weights, import_student_weights, layouts
from ppkt.models.student import build_student
from ppkt.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d
from ppkt.sparse.spconv import import_spconv
from tests import test_spconv_backend

# test_spconv_backend's fixtures ``one_thread`` and ``spconv`` (one torch thread; skip without spconv)
one_thread = test_spconv_backend.one_thread
spconv_available = test_spconv_backend.spconv
SMALL = {"planes": (8, 16, 24, 32, 24, 16, 16, 12), "layers": (1, 2, 1, 2, 1, 2, 1, 1), "stem_channels": 8}


@pytest.fixture
def sp(spconv_available: None) -> Any:
    """spconv.pytorch, on one torch thread; the test is skipped without spconv."""
    return import_spconv()[0]


def cloud(batch: int = 2, seed: int = 0, side: int = 20, n: int = 1500) -> Tensor:
    """Unique non-negative ``(batch, x, y, z)`` voxels (a floor and a blob per item), shuffled."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        floor = torch.cat([torch.rand(n, 2, generator=g) * side, torch.full((n, 1), 1.0)], 1)
        d = torch.randn(n, 3, generator=g)
        blob = torch.tensor([side / 2, side / 3, side / 4]) + (side / 5) * d / d.norm(dim=1, keepdim=True)
        vox = torch.unique(torch.cat([floor, blob]).floor().clamp(min=0).to(torch.int32), dim=0)
        rows.append(torch.cat([torch.full((vox.shape[0], 1), b, dtype=torch.int32), vox], 1))
    coords = torch.cat(rows)
    return coords[torch.randperm(coords.shape[0], generator=g)]


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


# --- Pointcept's SpUNet-v1m1, from spconv 2 layers (as in Pointcept) ----------------------------------
def pointcept_spunet(
    sp: Any, in_channels: int, num_classes: int, base_channels: int, channels: Any, layers: Any
):
    """``SpUNetBase`` of Pointcept's ``spconv_unet_v1m1.py`` (``cls_mode=False``), same module names; its
    ``BasicBlock`` copied as written there (hence two near-identical conv definitions)."""
    spconv = sp

    class BasicBlock(spconv.SparseModule):
        def __init__(self, in_channels, embed_channels, norm_fn, indice_key=None, bias=False):  # type: ignore[no-untyped-def]
            super().__init__()
            if in_channels == embed_channels:
                self.proj = spconv.SparseSequential(nn.Identity())
            else:
                self.proj = spconv.SparseSequential(
                    spconv.SubMConv3d(in_channels, embed_channels, kernel_size=1, bias=False),
                    norm_fn(embed_channels),
                )
            self.conv1 = spconv.SubMConv3d(
                in_channels,
                embed_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=bias,
                indice_key=indice_key,
            )
            self.bn1 = norm_fn(embed_channels)
            self.relu = nn.ReLU()
            self.conv2 = spconv.SubMConv3d(
                embed_channels,
                embed_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=bias,
                indice_key=indice_key,
            )
            self.bn2 = norm_fn(embed_channels)

        def forward(self, x):  # type: ignore[no-untyped-def]
            residual = x
            out = self.conv1(x)
            out = out.replace_feature(self.relu(self.bn1(out.features)))
            out = self.conv2(out)
            out = out.replace_feature(self.bn2(out.features))
            out = out.replace_feature(out.features + self.proj(residual).features)
            return out.replace_feature(self.relu(out.features))

    class SpUNetBase(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_stages = len(layers) // 2
            norm_fn = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)
            block = BasicBlock
            self.conv_input = spconv.SparseSequential(
                spconv.SubMConv3d(
                    in_channels, base_channels, kernel_size=5, padding=1, bias=False, indice_key="stem"
                ),
                norm_fn(base_channels),
                nn.ReLU(),
            )
            enc_channels = base_channels
            dec_channels = channels[-1]
            self.down = nn.ModuleList()
            self.up = nn.ModuleList()
            self.enc = nn.ModuleList()
            self.dec = nn.ModuleList()
            for s in range(self.num_stages):
                self.down.append(
                    spconv.SparseSequential(
                        spconv.SparseConv3d(
                            enc_channels,
                            channels[s],
                            kernel_size=2,
                            stride=2,
                            bias=False,
                            indice_key=f"spconv{s + 1}",
                        ),
                        norm_fn(channels[s]),
                        nn.ReLU(),
                    )
                )
                self.enc.append(
                    spconv.SparseSequential(
                        OrderedDict(
                            [
                                (
                                    f"block{i}",
                                    block(
                                        channels[s], channels[s], norm_fn=norm_fn, indice_key=f"subm{s + 1}"
                                    ),
                                )
                                for i in range(layers[s])
                            ]
                        )
                    )
                )
                self.up.append(
                    spconv.SparseSequential(
                        spconv.SparseInverseConv3d(
                            channels[len(channels) - s - 2],
                            dec_channels,
                            kernel_size=2,
                            bias=False,
                            indice_key=f"spconv{s + 1}",
                        ),
                        norm_fn(dec_channels),
                        nn.ReLU(),
                    )
                )
                self.dec.append(
                    spconv.SparseSequential(
                        OrderedDict(
                            [
                                (
                                    f"block{i}",
                                    block(
                                        dec_channels + enc_channels,
                                        dec_channels,
                                        norm_fn=norm_fn,
                                        indice_key=f"subm{s}",
                                    ),
                                )
                                if i == 0
                                else (
                                    f"block{i}",
                                    block(dec_channels, dec_channels, norm_fn=norm_fn, indice_key=f"subm{s}"),
                                )
                                for i in range(layers[len(channels) - s - 1])
                            ]
                        )
                    )
                )
                enc_channels = channels[s]
                dec_channels = channels[len(channels) - s - 2]
            self.final = (
                spconv.SubMConv3d(channels[-1], num_classes, kernel_size=1, padding=1, bias=True)
                if num_classes > 0
                else spconv.Identity()
            )

        def forward(self, grid_coord: Tensor, feat: Tensor, batch: Tensor) -> Tensor:
            sparse_shape = torch.add(torch.max(grid_coord, dim=0).values, 96).tolist()
            x = spconv.SparseConvTensor(
                features=feat,
                indices=torch.cat([batch.unsqueeze(-1).int(), grid_coord.int()], dim=1).contiguous(),
                spatial_shape=sparse_shape,
                batch_size=int(batch.max()) + 1,
            )
            x = self.conv_input(x)
            skips = [x]
            for s in range(self.num_stages):
                x = self.down[s](x)
                x = self.enc[s](x)
                skips.append(x)
            x = skips.pop(-1)
            for s in reversed(range(self.num_stages)):
                x = self.up[s](x)
                skip = skips.pop(-1)
                x = x.replace_feature(torch.cat((x.features, skip.features), dim=1))
                x = self.dec[s](x)
            x = self.final(x)
            return x.features

    return SpUNetBase()


def strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    assert all(k.startswith(prefix) for k in state)
    return {k[len(prefix) :]: v for k, v in state.items()}


@pytest.mark.spconv
@pytest.mark.parametrize("backend", ["torch", "spconv"])
@pytest.mark.parametrize("train", [False, True])
def test_pointcept_spunet_equivalence(sp: Any, backend: str, train: bool) -> None:
    """ppkt's ``spunet_v1m1`` (+ a linear head) and Pointcept's ``SpUNet-v1m1`` (spconv 2, loaded strictly
    from the exported checkpoint): the same float64 outputs on the same voxels, to 1e-9, in eval mode
    (running statistics) and in train mode (batch statistics)."""
    torch.manual_seed(0)
    student = build_student("spunet_v1m1", 4, backend=backend, **SMALL).double()
    head = nn.Linear(student.out_channels, 5).double()
    randomise_bn(student)
    ckpt = export_weights(student, student.state_dict(), "pointcept", head=head.state_dict())
    ref = pointcept_spunet(sp, 4, 5, SMALL["stem_channels"], SMALL["planes"], SMALL["layers"]).double()
    ref.load_state_dict(strip(ckpt["state_dict"], "module.backbone."), strict=True)
    student.train(train), ref.train(train)

    coords = cloud()
    feats = torch.randn(coords.shape[0], 4, dtype=torch.float64)
    ours = head(student(SparseTensor(feats, coords)))
    theirs = ref(coords[:, 1:], feats, coords[:, 0])
    assert theirs.shape == ours.shape == (coords.shape[0], 5)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-9)
    assert ours.abs().max() > 1e-2  # not a trivially small output


def test_pointcept_full_preset_keys() -> None:
    """The default preset exports every key of Pointcept's default ``SpUNet-v1m1`` (read from its
    definition above through spconv-free shapes: the spconv modules are not needed to list keys)."""
    student = build_student("spunet_v1m1", 6)
    ckpt = export_weights(student, student.state_dict(), "pointcept")
    keys = strip(ckpt["state_dict"], "module.backbone.")
    assert keys["conv_input.0.weight"].shape == (32, 5, 5, 5, 6)
    assert keys["down.0.0.weight"].shape == (32, 2, 2, 2, 32)  # base 32 -> channels[0] 32
    assert keys["down.3.0.weight"].shape == (256, 2, 2, 2, 128)
    assert keys["up.3.0.weight"].shape == (256, 2, 2, 2, 256)  # the first decoder stage runs last in s
    assert keys["up.0.0.weight"].shape == (96, 2, 2, 2, 96)
    assert keys["dec.0.block0.proj.0.weight"].shape == (96, 1, 1, 1, 96 + 32)
    assert keys["dec.3.block0.conv1.weight"].shape == (256, 3, 3, 3, 256 + 128)
    assert "enc.0.block0.proj.0.weight" not in keys  # Pointcept's encoder blocks keep their channels
    assert [k for k in keys if k.startswith("enc.3.")][-1].startswith("enc.3.block5.")
    assert keys["conv_input.1.running_var"].shape == (32,) and "final.weight" not in keys


@pytest.mark.spconv
@pytest.mark.parametrize("backend", ["torch", "spconv"])
def test_pointcept_default_preset_equivalence(sp: Any, backend: str) -> None:
    """The full-size preset against Pointcept's default ``SpUNet-v1m1`` (eval mode, float64)."""
    torch.manual_seed(1)
    student = build_student("spunet_v1m1", 3, backend=backend, out_channels=4).double().eval()
    randomise_bn(student, 1)
    ckpt = export_weights(student, student.state_dict(), "pointcept")
    ref = pointcept_spunet(sp, 3, 4, 32, (32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2))
    ref.double().eval().load_state_dict(strip(ckpt["state_dict"], "module.backbone."), strict=True)
    coords = cloud(batch=1, side=14, n=400, seed=3)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    ours = student(SparseTensor(feats, coords))
    torch.testing.assert_close(ref(coords[:, 1:], feats, coords[:, 0]), ours, rtol=0, atol=1e-9)


def single_tap(cout: int, k: int, cin: int, tap: tuple[int, int, int]) -> Tensor:
    """A ppkt weight ``[Cout, kz, ky, kx, Cin]`` with one non-zero kernel tap ``(ix, iy, iz)``."""
    w = torch.zeros(cout, k, k, k, cin, dtype=torch.float64)
    ix, iy, iz = tap
    w[:, iz, iy, ix, :] = torch.randn(cout, cin, dtype=torch.float64)
    return w


def by_coords(coords: Tensor, feats: Tensor) -> Tensor:
    """Rows sorted by their ``(batch, x, y, z)`` coordinates."""
    key = ((coords[:, 0].long() * 4096 + coords[:, 1]) * 4096 + coords[:, 2]) * 4096 + coords[:, 3]
    return feats[torch.argsort(key)]


@pytest.mark.spconv
@pytest.mark.parametrize(
    ("kind", "k", "tap"), [("subm", 3, (2, 1, 0)), ("subm", 5, (0, 1, 3)), ("down", 2, (1, 0, 0))]
)
def test_pointcept_offset_order_single_tap(sp: Any, kind: str, k: int, tap: tuple[int, int, int]) -> None:
    """One non-zero tap at an asymmetric ``(ix, iy, iz)``: ppkt's conv and spconv 2 on Pointcept's
    ``(batch, x, y, z)`` indices with :func:`~ppkt.export.layouts.to_spconv2_xyz` give the same output; the
    unconverted weight does not."""
    coords = cloud(batch=2, side=10, n=300, seed=5)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    w = single_tap(4, k, 3, tap)
    ours_conv = SubMConv3d(3, 4, k) if kind == "subm" else SparseConv3d(3, 4, k, 2)
    ours_conv.weight.data = w
    x = SparseTensor(feats, coords)
    out = ours_conv(x)
    ours = by_coords(out.coords, out.feats)
    shape = (coords[:, 1:].amax(0) + 8).tolist()
    inp = sp.SparseConvTensor(feats, coords.int().contiguous(), shape, 2)

    def theirs(weight: Tensor) -> Tensor:
        conv = (
            sp.SubMConv3d(3, 4, k, bias=False) if kind == "subm" else sp.SparseConv3d(3, 4, k, 2, bias=False)
        )
        conv = conv.double()
        conv.weight.data = weight
        y = conv(inp)
        return by_coords(y.indices, y.features)

    assert ours.abs().sum() > 0
    torch.testing.assert_close(theirs(layouts.to_spconv2_xyz(w)), ours, rtol=0, atol=1e-12)
    assert not torch.allclose(theirs(w.contiguous()), ours)


@pytest.mark.spconv
def test_spconv_1x1_reads_transposed(sp: Any) -> None:
    """spconv 2.3's 1×1×1 conv multiplies by ``weight.view(Cin, Cout)``: the reason for ``to_spconv2_1x1``."""
    coords = cloud(batch=1, side=8, n=100)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    ours = SubMConv3d(3, 5, 1).double()
    inp = sp.SparseConvTensor(feats, coords.int().contiguous(), (coords[:, 1:].amax(0) + 2).tolist(), 1)
    conv = sp.SubMConv3d(3, 5, 1, bias=False).double()
    conv.weight.data = layouts.to_spconv2_1x1(ours.weight.data)
    expected = ours(SparseTensor(feats, coords)).feats
    torch.testing.assert_close(conv(inp).features, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(layouts.from_spconv2_1x1(conv.weight.data), ours.weight.data, rtol=0, atol=0)


# --- MinkowskiEngine / SLidR MinkUNet34C (not installable here: keys, shapes, offset order) -----------
def minkunet34c_keys(in_channels: int, out_channels: int | None, stem: int = 5) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of MinkowskiEngine's ``MinkUNet34C(in, out, D=3)``, written from
    ``examples/minkunet.py`` + ``examples/resnet.py`` (``_make_layer``) + ``modules/resnet_block.py``
    (``BasicBlock``: conv1, norm1, conv2, norm2, downsample) of MinkowskiEngine 0.5: a
    ``MinkowskiConvolution`` holds ``kernel [K, Cin, Cout]`` (``[Cin, Cout]`` when ``K = 1``) and, with
    ``bias=True``, ``bias [1, Cout]``; a ``MinkowskiBatchNorm`` wraps ``bn = nn.BatchNorm1d``."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name: str, k: int, cin: int, cout: int) -> None:
        keys[f"{name}.kernel"] = (k**3, cin, cout) if k > 1 else (cin, cout)

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{p}"] = (c,)
        keys[f"{name}.bn.num_batches_tracked"] = ()

    planes, layers, inplanes = (32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2), 32

    def make_layer(name: str, p: int, blocks: int) -> None:
        nonlocal inplanes
        for b in range(blocks):
            cin = inplanes if b == 0 else p
            conv(f"{name}.{b}.conv1", 3, cin, p)
            bn(f"{name}.{b}.norm1", p)
            conv(f"{name}.{b}.conv2", 3, p, p)
            bn(f"{name}.{b}.norm2", p)
            if b == 0 and inplanes != p:
                conv(f"{name}.{b}.downsample.0", 1, inplanes, p)
                bn(f"{name}.{b}.downsample.1", p)
        inplanes = p

    conv("conv0p1s1", stem, in_channels, 32)
    bn("bn0", 32)
    for i, name in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]):
        conv(name, 2, inplanes, inplanes)
        bn(f"bn{i + 1}", inplanes)
        make_layer(f"block{i + 1}", planes[i], layers[i])
    skips = [planes[2], planes[1], planes[0], 32]
    for j, name in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
        conv(name, 2, inplanes, planes[4 + j])
        bn(f"bntr{4 + j}", planes[4 + j])
        inplanes = planes[4 + j] + skips[j]
        make_layer(f"block{5 + j}", planes[4 + j], layers[4 + j])
    if out_channels is not None:
        keys["final.kernel"] = (96, out_channels)
        keys["final.bias"] = (1, out_channels)
    return keys


@pytest.mark.parametrize(
    ("preset", "stem"), [("minkunet34c", 5), ("res16unet34c", 5), ("slidr_res16unet34c", 3)]
)
def test_minkunet34c_keys_and_shapes(preset: str, stem: int) -> None:
    """Every key and shape of MinkowskiEngine's ``MinkUNet34C`` (5³ stem) / SLidR's ``Res16UNet34C(1, 64)``
    (3³ stem, its pretraining projection ``final`` 96 -> 64)."""
    student = build_student(preset, 1)
    head = nn.Linear(96, 64)
    ckpt = export_weights(student, student.state_dict(), "minkunet34c", head=head.state_dict())
    assert list(ckpt) == ["model_points"]
    got = {k: tuple(v.shape) for k, v in ckpt["model_points"].items()}
    assert got == minkunet34c_keys(1, 64, stem)
    torch.testing.assert_close(ckpt["model_points"]["final.kernel"], head.weight.t(), rtol=0, atol=0)


def reference_conv(
    coords_in: Tensor,
    feats: Tensor,
    coords_out: Tensor,
    kernel: Tensor,
    offsets: list[tuple[int, int, int]],
    s: int,
) -> Tensor:
    """``out[o] = sum_k in[s * o + offset_k] @ kernel[k]`` over level coordinates (a dictionary per site):
    MinkowskiEngine's / TorchSparse's convolution with their own offset enumeration ``offsets``."""
    index = {tuple(c): i for i, c in enumerate(coords_in.tolist())}
    out = torch.zeros(coords_out.shape[0], kernel.shape[-1], dtype=feats.dtype)
    for o, (b, x, y, z) in enumerate(coords_out.tolist()):
        for k, (dx, dy, dz) in enumerate(offsets):
            i = index.get((b, s * x + dx, s * y + dy, s * z + dz))
            if i is not None:
                out[o] += feats[i] @ kernel[k]
    return out


def reference_transposed(
    coarse: Tensor, feats: Tensor, fine: Tensor, kernel: Tensor, offsets: list[tuple[int, int, int]]
) -> Tensor:
    """The transposed stride-2 convolution: ``out[2 * o + offset_k] += in[o] @ kernel[k]``."""
    index = {tuple(c): i for i, c in enumerate(fine.tolist())}
    out = torch.zeros(fine.shape[0], kernel.shape[-1], dtype=feats.dtype)
    for o, (b, x, y, z) in enumerate(coarse.tolist()):
        for k, (dx, dy, dz) in enumerate(offsets):
            i = index.get((b, 2 * x + dx, 2 * y + dy, 2 * z + dz))
            if i is not None:
                out[i] += feats[o] @ kernel[k]
    return out


LIBRARIES = {
    "minkowski": (layouts.minkowski_kernel_offsets, layouts.to_minkowski, layouts.from_minkowski),
    "torchsparse": (layouts.torchsparse_kernel_offsets, layouts.to_torchsparse, layouts.from_torchsparse),
}


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("single", [True, False])
def test_kernel_offset_order(library: str, single: bool) -> None:
    """ppkt's submanifold (k 3, 5), down (k2 s2) and up (k2 s2) convs equal the reference convolution
    with the library's offset enumeration on the converted kernel: for one asymmetric tap and for a full
    random kernel; and the conversion round-trips exactly."""
    offsets_of, to, back = LIBRARIES[library]
    coords = cloud(batch=2, side=8, n=120, seed=7)
    x = SparseTensor(torch.randn(coords.shape[0], 3, dtype=torch.float64), coords)
    g = torch.Generator().manual_seed(0)

    def weight(k: int, tap: tuple[int, int, int]) -> Tensor:
        return (
            single_tap(4, k, 3, tap)
            if single
            else torch.randn(4, k, k, k, 3, generator=g, dtype=torch.float64)
        )

    for k, tap in ((3, (2, 0, 1)), (5, (4, 1, 0))):
        conv = SubMConv3d(3, 4, k).double()
        conv.weight.data = weight(k, tap)
        ref = reference_conv(coords, x.feats, coords, to(conv.weight.data), offsets_of(k), 1)
        torch.testing.assert_close(conv(x).feats, ref, rtol=0, atol=1e-12)
        assert torch.equal(back(to(conv.weight.data), k), conv.weight.data)
    down = SparseConv3d(3, 4, 2, 2).double()
    down.weight.data = weight(2, (1, 0, 0))
    y = down(x)
    ref = reference_conv(coords, x.feats, y.coords, to(down.weight.data), offsets_of(2), 2)
    torch.testing.assert_close(y.feats, ref, rtol=0, atol=1e-12)
    up = SparseInverseConv3d(4, 3, 2, 2).double()
    up.weight.data = torch.randn(3, 2, 2, 2, 4, generator=g, dtype=torch.float64)
    if single:
        up.weight.data = single_tap(3, 2, 4, (0, 1, 1))
    ref = reference_transposed(y.coords, y.feats, coords, to(up.weight.data), offsets_of(2))
    torch.testing.assert_close(up(y).feats, ref, rtol=0, atol=1e-12)
    assert torch.equal(back(to(up.weight.data), 2), up.weight.data)


def test_offset_enumerations() -> None:
    """The enumerations as written in the libraries' sources (see ppkt.export.layouts)."""
    me3 = layouts.minkowski_kernel_offsets(3)
    assert me3[:4] == [(-1, -1, -1), (0, -1, -1), (1, -1, -1), (-1, 0, -1)] and me3[13] == (0, 0, 0)
    assert layouts.minkowski_kernel_offsets(2)[:3] == [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    assert layouts.torchsparse_kernel_offsets(3) == me3
    assert layouts.torchsparse_kernel_offsets(2)[:3] == [(0, 0, 0), (0, 0, 1), (0, 1, 0)]
    assert layouts.ppkt_kernel_offsets(3, centred=True) == me3
    assert layouts.ppkt_kernel_offsets(2, centred=False) == layouts.minkowski_kernel_offsets(2)


def test_spconv1_layout() -> None:
    """spconv 1.x ``[kz, ky, kx, Cin, Cout]``: ``w1[iz, iy, ix] == W[:, iz, iy, ix, :].T``; round trip."""
    w = torch.randn(5, 3, 3, 3, 2)
    w1 = layouts.to_spconv1(w)
    assert w1.shape == (3, 3, 3, 2, 5)
    assert torch.equal(w1[0, 1, 2], w[:, 0, 1, 2, :].t())
    assert torch.equal(layouts.from_spconv1(w1), w)
    assert torch.equal(layouts.from_spconv2_xyz(layouts.to_spconv2_xyz(w)), w)
    assert torch.equal(layouts.to_spconv2_xyz(w)[:, 2, 1, 0], w[:, 0, 1, 2])


# --- files: export -> import round trip, CLI, refusals --------------------------------------------------
def fake_run(
    path: Path, name: str, in_channels: int = 3, classes: int | None = None, **arch: Any
) -> nn.Module:
    """A ``ppkt pretrain`` (or, with ``classes``, ``ppkt finetune``) checkpoint of a random student."""
    torch.manual_seed(0)
    student = build_student(name, in_channels, **arch)
    randomise_bn(student)
    head = nn.Linear(student.out_channels, classes or 8)
    sd = {f"student.{k}": v for k, v in student.state_dict().items()}
    sd.update({f"head.linear.{k}": v for k, v in head.state_dict().items()})
    hp: dict[str, Any] = {"config": {"student": {"name": name}}, "in_channels": in_channels}
    if classes:
        hp["num_classes"] = classes
    torch.save({"state_dict": sd, "hyper_parameters": hp}, path)
    return student


@pytest.mark.parametrize(("name", "to"), [("spunet_v1m1", "pointcept"), ("minkunet34c", "minkunet34c")])
def test_cli_export_then_import_is_identity(tmp_path: Path, name: str, to: str) -> None:
    student = fake_run(tmp_path / "run.ckpt", name)
    out = tmp_path / f"{to}.pth"
    assert cli_export(tmp_path / "run.ckpt", to, out) == 0
    raw = torch.load(out, weights_only=True)
    foreign = detect_format(raw)
    assert foreign is not None and foreign.target.name == to
    assert ("final.bias" in foreign.state) == (to == "minkunet34c")  # auto: SLidR keeps its projection
    fresh = build_student(name, 3)
    back = import_student_weights(out, fresh, name)
    assert back is not None
    original = student.state_dict()
    assert list(back) == list(original)
    for k, v in original.items():
        assert torch.equal(back[k], v), k
    # other containers and prefixes: a plain state dict; Pointcept's MSC-style "module.student.backbone."
    inner = raw["state_dict"] if to == "pointcept" else raw["model_points"]
    plain = strip(inner, "module.backbone.") if to == "pointcept" else inner
    variants = [
        plain,
        {"state_dict": {f"module.student.backbone.{k}": v for k, v in plain.items()}, "epoch": 3},
    ]
    for variant in variants:
        again = detect_format(variant)
        assert again is not None and again.target.name == to
        assert set(again.state) == set(foreign.state)
    # a ppkt checkpoint is left to ppkt's own reader
    assert import_student_weights(tmp_path / "run.ckpt", fresh, name) is None


def cli_export(ckpt: Path, to: str, out: Path) -> int:
    from ppkt.cli.main import main

    return main(["export", "--ckpt", str(ckpt), "--to", to, "--out", str(out)])


def test_export_finetune_head_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path / "ft.ckpt", "spunet_v1m1", classes=13)
    assert cli_export(tmp_path / "ft.ckpt", "pointcept", tmp_path / "a.pth") == 0
    sd = torch.load(tmp_path / "a.pth", weights_only=True)["state_dict"]
    assert sd["module.backbone.final.weight"].shape == (13, 1, 1, 1, 96)
    assert sd["module.backbone.final.bias"].shape == (13,)
    # a student that is not the target's network: refused, nothing written
    fake_run(tmp_path / "mink.ckpt", "res16unet34c")
    assert cli_export(tmp_path / "mink.ckpt", "pointcept", tmp_path / "b.pth") == 2
    err = capsys.readouterr().err
    assert "not Pointcept's SpUNet-v1m1" in err and "spunet_v1m1" in err and not (tmp_path / "b.pth").exists()
    assert cli_export(tmp_path / "ft.ckpt", "minkunet34c", tmp_path / "c.pth") == 2
    assert "MinkUNet34C" in capsys.readouterr().err
    # importing into a student of another architecture
    with pytest.raises(WeightsError, match="SpUNet-v1m1"):
        import_student_weights(tmp_path / "a.pth", build_student("res16unet34c", 3), "res16unet34c")
    with pytest.raises(WeightsError, match="wrong tensor shapes"):  # same family, other channels
        import_student_weights(tmp_path / "a.pth", build_student("spunet_v1m1", 3, **SMALL), "spunet_v1m1")
    torch.save({"model_state": {"x": torch.zeros(1)}}, tmp_path / "pcdet.pth")
    with pytest.raises(WeightsError, match="OpenPCDet"):
        import_student_weights(tmp_path / "pcdet.pth", build_student("spunet_v1m1", 3))
    with pytest.raises(WeightsError, match="unknown export target"):
        export_weights(build_student("unet_small", 3), {}, "openpcdet")


def test_finetune_init_from_foreign_weights(tmp_path: Path) -> None:
    """``load_backbone`` (``ppkt finetune --init FILE``) reads a Pointcept file into the student."""
    from ppkt.config import FinetuneConfig, to_dict
    from ppkt.config.pretrain import StudentConfig
    from ppkt.training.seg_module import SegmentationModule

    student = fake_run(tmp_path / "run.ckpt", "spunet_v1m1", in_channels=3)
    ckpt = export_weights(student, student.state_dict(), "pointcept")
    torch.save(ckpt, tmp_path / "pointcept.pth")
    cfg = FinetuneConfig(student=StudentConfig(name="spunet_v1m1"))
    module = SegmentationModule(to_dict(cfg), 3, 4, ["a", "b", "c", "d"])
    module.load_backbone(tmp_path / "pointcept.pth")
    for k, v in student.state_dict().items():
        assert torch.equal(module.student.state_dict()[k], v), k
    cfg = FinetuneConfig(student=StudentConfig(name="unet_small"))
    with pytest.raises(WeightsError, match=r"student\.name='unet_small'"):
        SegmentationModule(to_dict(cfg), 3, 4, ["a", "b", "c", "d"]).load_backbone(tmp_path / "pointcept.pth")


# --- ONNX ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["spunet_v1m1", "mmdet3d_minkunet34"])
def test_onnx_module_equals_student(preset: str) -> None:
    """The graph's PyTorch module (neighbour tables) is the student's eval forward (float64, 1e-12), with
    one or two stem convs."""
    from ppkt.export.onnx import OnnxStudent, neighbour_tables

    torch.manual_seed(0)
    student = build_student(preset, 3, out_channels=5, **SMALL).double()
    randomise_bn(student)
    model = OnnxStudent(student.eval())
    coords = cloud(batch=2, side=12, n=300, seed=2)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    with torch.no_grad():
        expected = student(SparseTensor(feats, coords))
        got = model(feats, *neighbour_tables(student, coords))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_onnx_export_dynamic_voxels(tmp_path: Path) -> None:
    """``ppkt export --to onnx``; onnxruntime on clouds of other sizes than the example matches PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ppkt.export.onnx import neighbour_tables

    student = fake_run(tmp_path / "run.ckpt", "unet_small").eval()
    assert cli_export(tmp_path / "run.ckpt", "onnx", tmp_path / "s.onnx") == 0
    session = ort.InferenceSession(str(tmp_path / "s.onnx"))
    names = [i.name for i in session.get_inputs()]
    for seed, batch in ((1, 1), (2, 2)):
        coords = cloud(batch=batch, side=14, n=250 * seed, seed=seed)
        feats = torch.randn(coords.shape[0], 3)
        inputs = [feats, *neighbour_tables(student, coords)]
        (out,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        with torch.no_grad():
            expected = student(SparseTensor(feats, coords))
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5)
