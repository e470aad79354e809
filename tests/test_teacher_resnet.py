"""ResNet teachers (torchvision / MoCo weights) and the optional DINOv2 teacher.

Weights are random (nothing is downloaded): a randomised model is saved in each supported checkpoint
format, reloaded through ``build_teacher`` and compared with the original; the architecture itself is
checked against torchvision's published tensor/parameter counts and an independent functional
(F.conv2d / F.batch_norm) implementation of the torchvision ResNet.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.errors import WeightsError
from ppkt.models.teachers import TEACHERS, ResNet, Teacher, build_teacher, resnet_layers
from ppkt.models.teachers.resnet import BasicBlock, Bottleneck

ALL_LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random conv/fc weights and non-trivial BatchNorm affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # BatchNorm weight
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            else:  # conv / fc weight, He-scaled
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in))
    return model


@pytest.fixture(scope="module")
def r18() -> ResNet:
    return _randomize(ResNet("resnet18", layers=ALL_LAYERS), 0)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def r50() -> ResNet:
    return _randomize(ResNet("resnet50", layers=ALL_LAYERS), 1)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, r18: ResNet, r50: ResNet) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("resnet_weights")
    sd18 = r18.state_dict()
    out = {"r18": d / "resnet18-random.pth", "r50": d / "resnet50-random.pth"}
    torch.save(sd18, out["r18"])
    torch.save(r50.state_dict(), out["r50"])

    # MoCo v2 (facebookresearch/moco main_moco.py): DataParallel prefix, query + key encoders with the
    # 2-layer MLP head fc.0/fc.2, the queue, plus epoch/arch/optimizer entries.
    g = torch.Generator().manual_seed(7)
    backbone = {k: v for k, v in sd18.items() if not k.startswith("fc.")}
    encoder = {
        **backbone,
        "fc.0.weight": torch.randn(512, 512, generator=g),
        "fc.0.bias": torch.randn(512, generator=g),
        "fc.2.weight": torch.randn(128, 512, generator=g),
        "fc.2.bias": torch.randn(128, generator=g),
    }
    moco: dict[str, Tensor] = {}
    for k, v in encoder.items():
        moco[f"module.encoder_q.{k}"] = v
        moco[f"module.encoder_k.{k}"] = v + 1 if v.is_floating_point() else v  # differs from encoder_q
    moco["module.queue"] = torch.randn(128, 1024, generator=g)
    moco["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}
    out["moco"] = d / "moco_v2_random.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": moco, "optimizer": optimizer}, out["moco"])
    out["moco_plain"] = d / "moco_v2_no_module.pth.tar"
    torch.save({"state_dict": {k[len("module.") :]: v for k, v in moco.items()}}, out["moco_plain"])
    # MoCo v3: base/momentum encoders and a predictor.
    v3 = {f"module.base_encoder.{k}": v for k, v in encoder.items()}
    v3.update({f"module.momentum_encoder.{k}": v + 1 for k, v in encoder.items() if v.is_floating_point()})
    v3["module.predictor.0.weight"] = torch.randn(64, 128, generator=g)
    out["moco_v3"] = d / "moco_v3_random.pth.tar"
    torch.save({"state_dict": v3}, out["moco_v3"])
    return out


@pytest.fixture(scope="module")
def built(files: dict[str, Path]) -> dict[str, Teacher]:
    """``build_teacher`` with default layers from the random torchvision-format files (loaded once)."""
    return {
        arch: build_teacher(arch, weights=files[key])
        for arch, key in (("resnet18", "r18"), ("resnet50", "r50"))
    }


def _assert_same_features(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert fa.shape == fb.shape
        assert torch.equal(fa, fb)


# ---------------------------------------------------------------------------------------------------
# Architecture: torchvision names and counts, independent functional reference


def test_resnets_are_registered() -> None:
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "dinov2", "dinov2_vits14"):
        assert name in TEACHERS


@pytest.mark.parametrize(
    ("arch", "tensors", "params"),
    [
        # torchvision's numbers: len(state_dict()) and sum(p.numel() for p in parameters())
        ("resnet18", 122, 11_689_512),
        ("resnet34", 218, 21_797_672),
        ("resnet50", 320, 25_557_032),
        ("resnet101", 626, 44_549_160),
    ],
)
def test_state_dict_matches_torchvision_layout(arch: str, tensors: int, params: int) -> None:
    model = ResNet(arch)
    sd = model.state_dict()
    assert len(sd) == tensors
    assert sum(p.numel() for p in model.parameters()) == params
    assert "mean" not in sd and "std" not in sd  # normalisation buffers are not part of the weights
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "fc.bias"} <= set(sd)
    # layer1 starts with a projection only in Bottleneck networks (64 -> 256 channels)
    assert ("layer1.0.downsample.0.weight" in sd) == (arch in ("resnet50", "resnet101"))


def test_bottleneck_has_stride_on_the_3x3_conv() -> None:
    block = ResNet("resnet50").layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv3.stride == (1, 1)
    assert block.downsample is not None and block.downsample[0].stride == (2, 2)


def _bn(x: Tensor, sd: dict[str, Tensor], p: str) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        False,
        0.0,
        1e-5,
    )


def _ref_block(x: Tensor, sd: dict[str, Tensor], p: str, stride: int) -> Tensor:
    """torchvision BasicBlock / Bottleneck (v1.5) written with F.conv2d and F.batch_norm."""
    if f"{p}.conv3.weight" in sd:
        h = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
        h = F.relu(_bn(F.conv2d(h, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn2"))
        h = _bn(F.conv2d(h, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    else:
        h = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1"))
        h = _bn(F.conv2d(h, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
    if f"{p}.downsample.0.weight" in sd:
        skip = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
    else:
        skip = x
    return F.relu(h + skip)


def _ref_resnet(sd: dict[str, Tensor], images: Tensor) -> dict[str, Tensor]:
    """The whole torchvision ResNet forward (maps + logits) from a state dict, functionally."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.conv2d((images - mean) / std, sd["conv1.weight"], stride=2, padding=3)
    x = F.relu(_bn(x, sd, "bn1"))
    out = {"stem": x}
    x = F.max_pool2d(x, 3, 2, 1)
    for i in range(1, 5):
        n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith(f"layer{i}."))
        for j in range(n):
            x = _ref_block(x, sd, f"layer{i}.{j}", 2 if i > 1 and j == 0 else 1)
        out[f"layer{i}"] = x
    out["logits"] = F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
    return out


@pytest.mark.parametrize(
    ("block_type", "cin", "planes", "stride"),
    [(BasicBlock, 32, 32, 1), (BasicBlock, 16, 32, 2), (Bottleneck, 64, 16, 1), (Bottleneck, 32, 16, 2)],
)
def test_block_matches_functional_reference(block_type: type, cin: int, planes: int, stride: int) -> None:
    block = _randomize(block_type(cin, planes, stride), 3).eval()
    assert (block.downsample is not None) == (stride != 1 or cin != planes * block_type.expansion)
    x = torch.randn(2, cin, 13, 10)
    with torch.no_grad():
        got = block(x)
    sd = {f"b.{k}": v for k, v in block.state_dict().items()}
    want = _ref_block(x, sd, "b", stride)
    assert got.shape == (2, planes * block_type.expansion, math.ceil(13 / stride), math.ceil(10 / stride))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 96), (45, 37)])
def test_resnet18_matches_functional_reference(r18: ResNet, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size)
    ref = _ref_resnet(r18.state_dict(), x)
    for name, f in zip(r18.layers, r18(x)):
        torch.testing.assert_close(f, ref[name], rtol=1e-4, atol=1e-4 * float(ref[name].abs().max()))
    logits = ref["logits"]
    torch.testing.assert_close(r18.classify(x), logits, rtol=1e-4, atol=1e-4 * float(logits.abs().max()))


def test_resnet50_matches_functional_reference(r50: ResNet) -> None:
    x = torch.rand(1, 3, 70, 53)
    ref = _ref_resnet(r50.state_dict(), x)
    for name, f in zip(r50.layers, r50(x)):
        torch.testing.assert_close(f, ref[name], rtol=1e-4, atol=1e-4 * float(ref[name].abs().max()))


# ---------------------------------------------------------------------------------------------------
# Shapes, layers, freezing


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("size", [(224, 224), (120, 161), (33, 1)])
def test_shapes_and_strides(
    built: dict[str, Teacher], arch: str, size: tuple[int, int], r18: ResNet, r50: ResNet
) -> None:
    wide = 4 if arch == "resnet50" else 1
    t = built[arch]
    assert t.layers == ["layer2", "layer3", "layer4"]  # the default: strides 8/16/32
    assert t.strides == [8, 16, 32]
    assert t.out_channels == [128 * wide, 256 * wide, 512 * wide]
    h, w = size
    x = torch.rand(2, 3, h, w)
    feats = t(x)
    for f, c, s in zip(feats, t.out_channels, t.strides):
        assert f.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
        assert f.dtype == torch.float32 and torch.isfinite(f).all()
    full = r18 if arch == "resnet18" else r50  # all five layers of the same weights
    assert full.strides == [2, 4, 8, 16, 32]
    assert full.out_channels == [64, 64 * wide, 128 * wide, 256 * wide, 512 * wide]
    all_feats = full(x)
    for f, c, s in zip(all_feats, full.out_channels, full.strides):
        assert f.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
    _assert_same_features(feats, all_feats[2:])
    assert resnet_layers(arch) == dict(zip(ALL_LAYERS, zip(full.out_channels, full.strides)))


def test_teacher_is_frozen(files: dict[str, Path]) -> None:
    t = build_teacher("resnet18", weights=files["r18"], layers=["stem", "layer4"])
    assert isinstance(t, Teacher)
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training
    torch.nn.Sequential(t).train()
    assert not any(m.training for m in t.modules())
    bn = t.get_submodule("layer1.0.bn1")
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.running_mean is not None
    before = bn.running_mean.clone()
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    feats = t(x)
    assert all(not f.requires_grad for f in feats)
    torch.testing.assert_close(bn.running_mean, before)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 512, 2, 2)]


def test_unknown_layers_list_valid_names(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"layer5.*\['stem', 'layer1', 'layer2', 'layer3', 'layer4'\]"):
        build_teacher("resnet18", weights=files["r18"], layers=["layer5"])
    with pytest.raises(ValueError, match="list of names"):
        build_teacher("resnet18", weights=files["r18"], layers="layer4")
    with pytest.raises(ValueError, match="duplicates"):
        build_teacher("resnet50", weights=files["r50"], layers=["layer4", "layer4"])
    with pytest.raises(ValueError, match="stage3"):  # an EfficientNet name: checked before any file access
        build_teacher("resnet50", weights="/nonexistent.pth", layers=["stage3"])


# ---------------------------------------------------------------------------------------------------
# Weights: formats


def test_torchvision_state_dict_roundtrip(files: dict[str, Path], r18: ResNet) -> None:
    t = build_teacher("resnet18", weights=str(files["r18"]), layers=ALL_LAYERS)
    assert isinstance(t, ResNet) and t.has_classifier
    x = torch.rand(2, 3, 120, 161)
    _assert_same_features(t(x), r18(x))
    assert torch.equal(t.classify(x), r18.classify(x))


def test_resnet50_state_dict_roundtrip(files: dict[str, Path], r50: ResNet) -> None:
    t = build_teacher("resnet50", weights=files["r50"], layers=["layer1", "layer4"])
    x = torch.rand(1, 3, 96, 80)
    _assert_same_features(t(x), [r50(x)[i] for i in (1, 4)])


@pytest.mark.parametrize("key", ["moco", "moco_plain", "moco_v3"])
def test_moco_checkpoint_loads_the_query_encoder(files: dict[str, Path], r18: ResNet, key: str) -> None:
    t = build_teacher("resnet18", weights=files[key], layers=ALL_LAYERS)
    assert isinstance(t, ResNet)
    x = torch.rand(2, 3, 64, 80)
    _assert_same_features(t(x), r18(x))  # encoder_q, not encoder_k (which differs by +1)
    assert not t.has_classifier
    with pytest.raises(WeightsError, match="no ImageNet classifier"):
        t.classify(x)


def test_wrapped_and_prefixed_state_dicts(tmp_path: Path, r18: ResNet) -> None:
    sd = r18.state_dict()
    x = torch.rand(1, 3, 48, 48)
    variants = {
        "model.pth": {"model": sd, "epoch": 3},
        "state_dict.pth": {"state_dict": sd},
        "dataparallel.pth": {f"module.{k}": v for k, v in sd.items()},
        # torchvision files saved before PyTorch 0.4.1 have no num_batches_tracked buffers
        "old.pth": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        t = build_teacher("resnet18", weights=tmp_path / name, layers=["layer3"])
        assert isinstance(t, ResNet) and t.has_classifier
        assert torch.equal(t(x)[0], r18(x)[3]), name
    backbone = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # e.g. a self-supervised backbone
    torch.save(backbone, tmp_path / "backbone.pth")
    t = build_teacher("resnet18", weights=tmp_path / "backbone.pth")
    assert isinstance(t, ResNet) and not t.has_classifier
    assert torch.equal(t(x)[2], r18(x)[4])


# ---------------------------------------------------------------------------------------------------
# Weights: errors


def test_weights_are_required() -> None:
    with pytest.raises(WeightsError, match=r"teacher\.weights=/path/to/resnet50\.pth.*MoCo"):
        build_teacher("resnet50")
    with pytest.raises(WeightsError, match=r"resnet18\.pth"):
        build_teacher("resnet18", weights=None, layers=["layer4"])


def test_missing_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not found.*nope\.pth"):
        build_teacher("resnet18", weights=tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"definitely not a torch checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read.*corrupt\.pth"):
        build_teacher("resnet18", weights=corrupt)
    truncated = tmp_path / "truncated.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(WeightsError, match=r"truncated\.pth"):
        build_teacher("resnet18", weights=truncated)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"epoch": 3, "arch": "resnet18"}, not_tensors)
    with pytest.raises(WeightsError, match=r"not_tensors\.pth.*state dict of tensors"):
        build_teacher("resnet18", weights=not_tensors)


def test_wrong_architecture_names_file_and_keys(files: dict[str, Path]) -> None:
    with pytest.raises(WeightsError, match=r"resnet50-random\.pth") as err:
        build_teacher("resnet18", weights=files["r50"])
    msg = str(err.value)
    assert "does not match resnet18" in msg and "looks like a resnet50" in msg
    assert "unexpected keys" in msg and "layer1.0.bn3.bias" in msg
    with pytest.raises(WeightsError, match=r"resnet18-random\.pth") as err:
        build_teacher("resnet50", weights=files["r18"])
    msg = str(err.value)
    assert "does not match resnet50" in msg and "looks like a resnet18" in msg
    assert "missing keys" in msg and "layer1.0.bn3.bias" in msg
    with pytest.raises(WeightsError, match=r"moco_v2_random\.pth\.tar.*MoCo v1/v2.*resnet50"):
        build_teacher("resnet50", weights=files["moco"])


def test_missing_key_wrong_shape_nonfinite(tmp_path: Path, r18: ResNet) -> None:
    sd = r18.state_dict()
    missing = {k: v for k, v in sd.items() if k != "layer3.1.bn2.running_var"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing\.pth.*1 missing keys \['layer3\.1\.bn2\.running_var'\]"):
        build_teacher("resnet18", weights=tmp_path / "missing.pth")
    half_fc = {k: v for k, v in sd.items() if k != "fc.bias"}
    torch.save(half_fc, tmp_path / "half_fc.pth")
    with pytest.raises(WeightsError, match=r"half_fc\.pth.*fc\.bias"):
        build_teacher("resnet18", weights=tmp_path / "half_fc.pth")
    ten_classes = {**sd, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    torch.save(ten_classes, tmp_path / "ten_classes.pth")
    with pytest.raises(WeightsError, match=r"ten_classes\.pth.*wrong tensor shapes.*fc\.weight"):
        build_teacher("resnet18", weights=tmp_path / "ten_classes.pth")
    nan = {**sd, "layer1.0.conv1.weight": torch.full_like(sd["layer1.0.conv1.weight"], float("nan"))}
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan\.pth.*non-finite.*layer1\.0\.conv1\.weight"):
        build_teacher("resnet18", weights=tmp_path / "nan.pth")
    stray = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    stray["module.mystery.weight"] = torch.zeros(1)
    torch.save({"state_dict": stray}, tmp_path / "stray.pth")
    with pytest.raises(WeightsError, match=r"stray\.pth.*MoCo.*mystery"):
        build_teacher("resnet18", weights=tmp_path / "stray.pth")


# ---------------------------------------------------------------------------------------------------
# DINOv2 (optional transformers)


def test_dinov2_without_transformers_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(WeightsError, match=r"transformers.*pip install 'ppkt\[dinov2\]'"):
        build_teacher("dinov2", weights=tmp_path)
    with pytest.raises(WeightsError, match=r"pip install 'ppkt\[dinov2\]'"):
        build_teacher("dinov2_vits14")


def test_dinov2_needs_weights() -> None:
    with pytest.raises(WeightsError, match=r"teacher\.weights=.*facebook/dinov2-small"):
        build_teacher("dinov2")


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,  # the released DINOv2 models' patch size (the config default varies by version)
    )
    model = transformers.Dinov2Model(config).eval()
    folder = tmp_path_factory.mktemp("dinov2") / "tiny-dinov2"
    model.save_pretrained(folder)
    return folder, model


def test_dinov2_maps_from_a_local_folder(tiny_dinov2: tuple[Path, torch.nn.Module]) -> None:
    folder, hf = tiny_dinov2
    t = build_teacher("dinov2", weights=folder, layers=["block0", "last"])
    assert t.strides == [14, 14] and t.out_channels == [32, 32]
    assert build_teacher("dinov2", weights=str(folder)).layers == ["last"]
    h, w = 45, 70  # 45 is padded to 56 (4 patches), 70 is exactly 5 patches
    x = torch.rand(2, 3, h, w)
    feats = t(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 5), (2, 32, 4, 5)]
    # reference: normalise, zero-pad to 56x70, run the HF model, LayerNorm'd patch tokens as a grid
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = hf(pixel_values=F.pad((x - mean) / std, (0, 0, 0, 11)), output_hidden_states=True)
        want_last = out.last_hidden_state[:, 1:].transpose(1, 2).reshape(2, 32, 4, 5)
        want_0 = hf.layernorm(out.hidden_states[1][:, 1:]).transpose(1, 2).reshape(2, 32, 4, 5)
    torch.testing.assert_close(feats[1], want_last, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[0], want_0, rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not any(m.training for m in t.modules())


def test_dinov2_errors(tiny_dinov2: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = tiny_dinov2
    with pytest.raises(ValueError, match=r"block3.*\['last', 'block0', 'block1', 'block2'\]"):
        build_teacher("dinov2", weights=folder, layers=["block3"])
    with pytest.raises(WeightsError, match=r"not found.*missing-folder"):
        build_teacher("dinov2", weights=tmp_path / "missing-folder")
    with pytest.raises(WeightsError, match=r"no config\.json"):
        build_teacher("dinov2", weights=tmp_path)
    with pytest.raises(WeightsError, match=r"ppkt-test/not-cached.*local Hugging Face cache"):
        build_teacher("dinov2", weights="ppkt-test/not-cached")
    with pytest.raises(WeightsError, match=r"hidden size 32, expected 384"):
        build_teacher("dinov2_vits14", weights=folder)
