"""mmdet3d's ``MinkUNetBackbone`` (spconv backend) as an export target, and the OpenPCDet refusal.

The reference network below is written from spconv 2 layers after mmdet3d's own files (read with the
search tool, 2026-12): ``mmdet3d/models/backbones/minkunet_backbone.py`` (``MinkUNetBackbone``: module tree
``conv_input.{0,1}``, ``encoder.i.{0, 1..}``, ``decoder.i.{0, 1.b}``; ``sparseconv_backend='spconv'``:
``make_sparse_convmodule`` = ``SparseSequential(conv, norm, ReLU)``, residual branch ``(conv k1, norm)``,
indice keys ``subm0``, ``spconv{i+1}``, ``subm{i+1}``), ``mmdet3d/models/layers/sparse_block.py``
(``SparseBasicBlock``: mmdet's ``BasicBlock`` names ``conv1, bn1, conv2, bn2, downsample``; BatchNorm1d
with PyTorch's defaults), ``mmdet3d/models/layers/spconv/overwrite_spconv/write_spconv2.py`` (the loader's
``[a, b, c, d, e] -> [e, a, b, c, d]`` permutation of every sparse-conv tensor of a file without version-2
metadata, emulated by :func:`mmdet3d_load`) and ``configs/_base_/models/minkunet.py`` /
``configs/minkunet/minkunet34_w32_*`` (``encoder_blocks=[2, 3, 4, 6]``, ``decode_head`` ``MinkUNetHead``
whose ``conv_seg`` is an ``nn.Linear``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.export import detect_format, export_weights, get_target, import_student_weights
from ppkt.export.targets import OPENPCDET_REFUSAL
from ppkt.models.student import build_student
from ppkt.sparse import SparseTensor
from tests import test_export
from tests.test_export import SMALL, cli_export, cloud, fake_run, randomise_bn

from .conftest import assert_mentions

# test_export's fixtures: ``sp`` (spconv.pytorch on one torch thread; skipped without spconv) and its own
one_thread = test_export.one_thread
spconv_available = test_export.spconv_available
sp = test_export.sp


def mmdet3d_minkunet(
    spc: Any,
    in_channels: int,
    base_channels: int,
    encoder_channels: list[int],
    encoder_blocks: list[int],
    decoder_channels: list[int],
    decoder_blocks: list[int],
) -> nn.Module:
    """``MinkUNetBackbone(sparseconv_backend='spconv', block_type='basic')`` with mmdet3d's module names."""

    def convmodule(kind: str, cin: int, cout: int, k: int, key: str, order: str = "cna") -> Any:
        if kind == "subm":
            conv = spc.SubMConv3d(cin, cout, k, padding=k // 2, bias=False, indice_key=key)
        elif kind == "down":
            conv = spc.SparseConv3d(cin, cout, k, stride=2, bias=False, indice_key=key)
        else:
            conv = spc.SparseInverseConv3d(cin, cout, k, bias=False, indice_key=key)
        layers = [conv, nn.BatchNorm1d(cout)] + ([nn.ReLU(inplace=True)] if order == "cna" else [])
        return spc.SparseSequential(*layers)

    class SparseBasicBlock(spc.SparseModule):
        def __init__(self, inplanes: int, planes: int, downsample: Any = None, indice_key: str = "") -> None:
            super().__init__()
            self.conv1 = spc.SubMConv3d(inplanes, planes, 3, padding=1, bias=False, indice_key=indice_key)
            self.bn1 = nn.BatchNorm1d(planes)
            self.conv2 = spc.SubMConv3d(planes, planes, 3, padding=1, bias=False, indice_key=indice_key)
            self.bn2 = nn.BatchNorm1d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: Any) -> Any:
            identity = x.features
            out = self.conv1(x)
            out = out.replace_feature(self.relu(self.bn1(out.features)))
            out = self.conv2(out)
            out = out.replace_feature(self.bn2(out.features))
            if self.downsample is not None:
                identity = self.downsample(x).features
            return out.replace_feature(self.relu(out.features + identity))

    class MinkUNetBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = len(encoder_channels)
            self.conv_input = nn.Sequential(
                convmodule("subm", in_channels, base_channels, 3, "subm0"),
                convmodule("subm", base_channels, base_channels, 3, "subm0"),
            )
            enc = [base_channels, *encoder_channels]
            dec = [enc[-1], *decoder_channels]
            self.encoder = nn.ModuleList()
            self.decoder = nn.ModuleList()
            for i in range(n):
                layer = [convmodule("down", enc[i], enc[i], 2, f"spconv{i + 1}")]
                for j in range(encoder_blocks[i]):
                    if j == 0 and enc[i] != enc[i + 1]:
                        branch = convmodule("subm", enc[i], enc[i + 1], 1, "", order="cn")
                        layer.append(SparseBasicBlock(enc[i], enc[i + 1], branch, f"subm{i + 1}"))
                    else:
                        layer.append(SparseBasicBlock(enc[i + 1], enc[i + 1], None, f"subm{i + 1}"))
                self.encoder.append(nn.Sequential(*layer))
                up = convmodule("up", dec[i], dec[i + 1], 2, f"spconv{n - i}")
                blocks = []
                for j in range(decoder_blocks[i]):
                    if j == 0:
                        cin = dec[i + 1] + enc[-2 - i]
                        branch = convmodule("subm", cin, dec[i + 1], 1, "", order="cn")
                        blocks.append(SparseBasicBlock(cin, dec[i + 1], branch, f"subm{n - i - 1}"))
                    else:
                        blocks.append(SparseBasicBlock(dec[i + 1], dec[i + 1], None, f"subm{n - i - 1}"))
                self.decoder.append(nn.ModuleList([up, nn.Sequential(*blocks)]))

        def forward(self, coors: Tensor, feats: Tensor) -> Tensor:
            # mmdet3d takes spatial_shape = coors.max(0) + 1 and the batch size from the last row; a margin
            # here (as in the Pointcept reference) keeps every strided output inside the grid
            shape = (coors[:, 1:].amax(0) + 96).tolist()
            x = spc.SparseConvTensor(feats, coors.int().contiguous(), shape, int(coors[:, 0].max()) + 1)
            x = self.conv_input(x)
            laterals = [x]
            for layer in self.encoder:
                x = layer(x)
                laterals.append(x)
            laterals = laterals[:-1][::-1]
            for i, (up, blocks) in enumerate(self.decoder):
                x = up(x)
                x = x.replace_feature(torch.cat((x.features, laterals[i].features), dim=1))
                x = blocks(x)
            return x.features

    return MinkUNetBackbone()


def mmdet3d_load(model: nn.Module, state: dict[str, Tensor]) -> None:
    """What mmdet3d's ``write_spconv2._load_from_state_dict`` does with a file without version-2 metadata:
    every sparse-conv tensor is permuted ``[a, b, c, d, e] -> [e, a, b, c, d]`` before it is copied."""
    convs = {
        name for name, m in model.named_modules() if isinstance(m, nn.Module) and hasattr(m, "indice_key")
    }
    ready = {k: (v.permute(4, 0, 1, 2, 3) if k.rsplit(".", 1)[0] in convs else v) for k, v in state.items()}
    model.load_state_dict(ready, strict=True)


def split_file(ckpt: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    sd = ckpt["state_dict"]
    backbone = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    head = {k[len("decode_head.conv_seg.") :]: v for k, v in sd.items() if k.startswith("decode_head.")}
    assert len(backbone) + len(head) == len(sd)
    return backbone, head


@pytest.mark.spconv
@pytest.mark.parametrize("backend", ["torch", "spconv"])
@pytest.mark.parametrize("train", [False, True])
def test_mmdet3d_minkunet_equivalence(sp: Any, backend: str, train: bool) -> None:
    """ppkt's ``mmdet3d_minkunet34`` (+ a linear head) and mmdet3d's ``MinkUNetBackbone`` on spconv 2 (+
    ``decode_head.conv_seg``), loaded strictly from the exported file through mmdet3d's permutation: the
    same float64 outputs on the same voxels, to 1e-9, with running and with batch statistics."""
    torch.manual_seed(0)
    student = build_student("mmdet3d_minkunet34", 4, backend=backend, **SMALL).double()
    head = nn.Linear(student.out_channels, 5).double()
    randomise_bn(student)
    ckpt = export_weights(student, student.state_dict(), "mmdet3d", head=head.state_dict(), classifier=True)
    p = SMALL["planes"]
    layers = SMALL["layers"]
    ref = mmdet3d_minkunet(
        sp, 4, SMALL["stem_channels"], list(p[:4]), list(layers[:4]), list(p[4:]), list(layers[4:])
    )
    ref = ref.double()
    backbone, their_head = split_file(ckpt)
    mmdet3d_load(ref, backbone)
    conv_seg = nn.Linear(p[-1], 5).double()
    conv_seg.load_state_dict(their_head, strict=True)
    student.train(train), ref.train(train)

    coords = cloud()
    feats = torch.randn(coords.shape[0], 4, dtype=torch.float64)
    ours = head(student(SparseTensor(feats, coords)))
    theirs = conv_seg(ref(coords, feats))
    assert theirs.shape == ours.shape == (coords.shape[0], 5)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-9)
    assert ours.abs().max() > 1e-2


@pytest.mark.spconv
def test_mmdet3d_file_needs_the_permutation(sp: Any) -> None:
    """The file is written for mmdet3d's permuting loader (spconv 1.x layout): a plain strict load is
    refused by shape without it."""
    torch.manual_seed(2)
    student = build_student("mmdet3d_minkunet34", 3, **SMALL).double().eval()
    randomise_bn(student, 2)
    backbone, _ = split_file(export_weights(student, student.state_dict(), "mmdet3d"))
    ref = (
        mmdet3d_minkunet(sp, 3, 8, [8, 16, 24, 32], [1, 2, 1, 2], [24, 16, 16, 12], [1, 2, 1, 1])
        .double()
        .eval()
    )
    # the stem weight in the file is [kx, ky, kz, Cin, Cout], not spconv 2's [Cout, kx, ky, kz, Cin]
    assert backbone["conv_input.0.0.weight"].shape == (3, 3, 3, 3, 8)
    with pytest.raises(RuntimeError):
        ref.load_state_dict(backbone, strict=True)


def test_mmdet3d_full_preset_keys_and_round_trip(tmp_path: Path) -> None:
    """The default preset's keys and shapes are those of ``MinkUNetBackbone(in_channels=4,
    encoder_blocks=[2, 3, 4, 6])`` (as read in its source, see the module docstring); the CLI writes
    mmengine's ``{"state_dict": …}`` with the classifier as ``decode_head.conv_seg``; reading it back is the
    identity."""
    student = fake_run(tmp_path / "ft.ckpt", "mmdet3d_minkunet34", in_channels=4, classes=19)
    assert cli_export(tmp_path / "ft.ckpt", "mmdet3d", tmp_path / "mm.pth") == 0
    raw = torch.load(tmp_path / "mm.pth", weights_only=True)
    sd = raw["state_dict"]
    assert sd["backbone.conv_input.0.0.weight"].shape == (3, 3, 3, 4, 32)  # [kx, ky, kz, Cin, Cout]
    assert sd["backbone.conv_input.1.1.running_var"].shape == (32,)
    assert sd["backbone.encoder.0.0.0.weight"].shape == (2, 2, 2, 32, 32)  # down k2s2 keeps 32
    assert sd["backbone.encoder.1.1.downsample.0.weight"].shape == (1, 1, 1, 32, 64)
    assert "backbone.encoder.0.1.downsample.0.weight" not in sd  # 32 -> 32: no residual branch
    assert [k for k in sd if k.startswith("backbone.encoder.3.")][-1].startswith("backbone.encoder.3.6.")
    assert sd["backbone.decoder.0.0.0.weight"].shape == (2, 2, 2, 256, 256)  # SparseInverseConv3d
    assert sd["backbone.decoder.0.1.0.downsample.0.weight"].shape == (1, 1, 1, 256 + 128, 256)
    assert sd["backbone.decoder.3.1.0.conv1.weight"].shape == (3, 3, 3, 96 + 32, 96)
    assert sd["backbone.decoder.3.1.1.bn2.num_batches_tracked"].shape == ()
    assert sd["decode_head.conv_seg.weight"].shape == (19, 96)
    foreign = detect_format(raw)
    assert foreign is not None and foreign.target.name == "mmdet3d" and foreign.num_outputs == 19
    back = import_student_weights(tmp_path / "mm.pth", build_student("mmdet3d_minkunet34", 4))
    assert back is not None
    for k, v in student.state_dict().items():
        assert torch.equal(back[k], v), k


def test_openpcdet_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="unknown export target") as err:
        get_target("openpcdet")
    assert_mentions(err.value, "VoxelBackBone8x", "(3, 1, 1)", "padding (0, 1, 1)", "decoder")
    torch.save({"model_state": {"backbone_3d.conv_input.0.weight": torch.zeros(1)}}, tmp_path / "pcdet.pth")
    with pytest.raises(WeightsError, match="OpenPCDet") as err:
        import_student_weights(tmp_path / "pcdet.pth", build_student("spunet_v1m1", 3))
    assert OPENPCDET_REFUSAL in str(err.value)
    # a student of another architecture is not exported as mmdet3d's backbone
    with pytest.raises(WeightsError, match="MinkUNetBackbone") as err:
        export_weights(
            build_student("minkunet34c", 4), build_student("minkunet34c", 4).state_dict(), "mmdet3d"
        )
    assert_mentions(err.value, "stem_layers", "mmdet3d_minkunet34")
