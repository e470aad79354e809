"""The frozen EfficientNet-Lite0 teacher: real ImageNet predictions, shapes, freezing, weight errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ppkt.errors import WeightsError
from ppkt.models.teachers import TEACHERS, EfficientNetLite0, Teacher, build_teacher, load_weights
from ppkt.models.teachers.efficientnet_lite import default_weights_path, same_padding

from .conftest import assert_mentions


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return build_teacher("efficientnet_lite0")


def _photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo as [1, 3, 224, 224] float in [0, 1] (bilinear resize)."""
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)


def test_classifies_coffee_as_espresso(teacher: Teacher) -> None:
    assert isinstance(teacher, EfficientNetLite0)
    probs = teacher.classify(_photo("coffee")).softmax(dim=1)[0]
    assert probs.shape == (1000,)
    assert int(probs.argmax()) == 967  # espresso
    assert float(probs[967]) > 0.5


def test_classifies_chelsea_as_a_cat(teacher: Teacher) -> None:
    assert isinstance(teacher, EfficientNetLite0)
    top3 = teacher.classify(_photo("chelsea")).topk(3, dim=1).indices[0].tolist()
    assert {281, 282, 285} & set(top3)  # tabby, tiger cat, Egyptian cat


@pytest.mark.parametrize("size", [(120, 160), (97, 130), (33, 1)])
def test_feature_shapes_follow_same_padding(teacher: Teacher, size: tuple[int, int]) -> None:
    assert teacher.out_channels == [40, 112, 320]
    assert teacher.strides == [8, 16, 32]
    h, w = size
    feats = teacher(torch.rand(2, 3, h, w))
    assert len(feats) == 3
    for f, c, s in zip(feats, teacher.out_channels, teacher.strides):
        assert f.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
        assert f.dtype == torch.float32
        assert torch.isfinite(f).all()


def test_same_padding_matches_tensorflow_formula() -> None:
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(97, 5, 2) == (2, 2)
    assert same_padding(130, 5, 2) == (1, 2)
    assert same_padding(10, 3, 1) == (1, 1)
    assert same_padding(7, 1, 1) == (0, 0)


def test_selectable_layers_including_head() -> None:
    t = build_teacher("efficientnet_lite0", layers=["stage2", "stage7", "head"])
    assert t.out_channels == [24, 320, 1280]
    assert t.strides == [4, 32, 32]
    feats = t(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 24, 16, 24), (1, 320, 2, 3), (1, 1280, 2, 3)]
    assert (feats[2] >= 0).all() and (feats[2] <= 6).all()  # ReLU6 head


def test_default_layers_equal_subset_of_all_layers(teacher: Teacher) -> None:
    full = build_teacher("efficientnet_lite0", layers=["stem", "stage3", "stage5", "stage7", "head"])
    x = torch.rand(1, 3, 64, 64)
    a, b = teacher(x), full(x)
    for fa, fb in zip(a, b[1:4]):
        torch.testing.assert_close(fa, fb)


def test_teacher_is_frozen(teacher: Teacher) -> None:
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    torch.nn.Sequential(teacher).train()  # a parent switching to training mode must not unfreeze it
    assert not any(m.training for m in teacher.modules())
    bn = teacher.get_submodule("_bn0")
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.running_mean is not None
    before = bn.running_mean.clone()
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    feats = teacher(x)
    assert all(not f.requires_grad for f in feats)
    torch.testing.assert_close(bn.running_mean, before)
    with torch.inference_mode():
        assert teacher(x.detach())[0].shape == (2, 40, 8, 8)


def test_bad_images_are_rejected(teacher: Teacher) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        teacher(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        teacher(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_unknown_teacher_lists_known_names() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_teacher("resnet9000")
    assert "efficientnet_lite0" in TEACHERS


def test_unknown_layer_lists_choices() -> None:
    with pytest.raises(ValueError, match="stage3"):
        build_teacher("efficientnet_lite0", layers=["stage9"])
    with pytest.raises(ValueError, match="list of names"):
        build_teacher("efficientnet_lite0", layers="stage3")
    with pytest.raises(ValueError, match="duplicates"):
        build_teacher("efficientnet_lite0", layers=["stage3", "stage3"])


def test_missing_weights_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=r"nope\.pth"):
        build_teacher("efficientnet_lite0", weights=path)


def test_corrupt_weights_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"definitely not a torch checkpoint")
    with pytest.raises(WeightsError, match=r"corrupt\.pth"):
        build_teacher("efficientnet_lite0", weights=str(path))


def test_weights_with_wrong_keys_or_shapes_are_rejected(tmp_path: Path) -> None:
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    missing = dict(state)
    del missing["_fc.bias"]
    path = tmp_path / "missing_key.pth"
    torch.save(missing, path)
    with pytest.raises(WeightsError, match=r"missing_key\.pth.*_fc\.bias"):
        build_teacher("efficientnet_lite0", weights=path)
    reshaped = dict(state)
    reshaped["_fc.weight"] = torch.zeros(10, 1280)
    path = tmp_path / "bad_shape.pth"
    torch.save(reshaped, path)
    with pytest.raises(WeightsError, match=r"bad_shape\.pth.*_fc\.weight"):
        load_weights(EfficientNetLite0(), path)


def test_explicit_weights_path_gives_same_model(teacher: Teacher) -> None:
    other = build_teacher("efficientnet_lite0", weights=default_weights_path())
    x = torch.rand(1, 3, 48, 40)
    for a, b in zip(teacher(x), other(x)):
        torch.testing.assert_close(a, b)


def test_weights_path_with_home_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``teacher.weights: ~/file.pth`` is expanded like ``data.root``."""
    (tmp_path / "el0.pth").symlink_to(default_weights_path())
    monkeypatch.setenv("HOME", str(tmp_path))
    teacher = build_teacher("efficientnet_lite0", weights="~/el0.pth")
    assert isinstance(teacher, EfficientNetLite0)
    with pytest.raises(WeightsError) as err:
        build_teacher("efficientnet_lite0", weights="~/nothing.pth")
    assert_mentions(err.value, tmp_path / "nothing.pth", "not found")
