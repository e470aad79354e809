"""The upsampling projection layer and pixel sampling: shapes, unit norm, gradients, exact lookups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ppkt.models.teachers import build_teacher
from ppkt.models.upl import UpsamplingProjection, sample_pixels

CHANNELS = [40, 112, 320]
STRIDES = [8, 16, 32]


def _features(b: int, h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, c, math.ceil(h / s), math.ceil(w / s), generator=g) for c, s in zip(CHANNELS, STRIDES)
    ]


def _coordinate_map(h: int, w: int, stride: int, const: float = 100.0) -> torch.Tensor:
    """[1, 3, h, w] map whose channels are the full-resolution (u, v) of each cell centre and a constant."""
    centre = lambda n: torch.arange(n, dtype=torch.float64) * stride + (stride - 1) / 2  # noqa: E731
    v, u = torch.meshgrid(centre(h), centre(w), indexing="ij")
    return torch.stack([u, v, torch.full_like(u, const)])[None]


@pytest.mark.parametrize("output_stride", [1, 2, 4, 8])
@pytest.mark.parametrize("size", [(64, 96), (97, 130)])
def test_output_shape_and_unit_norm(output_stride: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h, w = size
    upl = UpsamplingProjection(CHANNELS, STRIDES, out_dim=16, output_stride=output_stride)
    out = upl(_features(2, h, w), size)
    assert out.shape == (2, 16, math.ceil(h / output_stride), math.ceil(w / output_stride))
    assert upl.output_size(size) == out.shape[-2:]
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, *out.shape[-2:]))


@pytest.mark.parametrize("hidden_dim", [None, 24])
def test_gradient_reaches_every_upl_parameter(hidden_dim: int | None) -> None:
    torch.manual_seed(0)
    upl = UpsamplingProjection(CHANNELS, STRIDES, out_dim=8, output_stride=4, hidden_dim=hidden_dim)
    out = upl(_features(2, 40, 56), (40, 56))
    target = F.normalize(torch.randn_like(out), dim=1)
    (out * target).sum().backward()
    for name, p in upl.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_with_real_teacher_only_upl_learns() -> None:
    torch.manual_seed(0)
    teacher = build_teacher("efficientnet_lite0")
    upl = UpsamplingProjection(teacher.out_channels, teacher.strides, out_dim=16, output_stride=2)
    images = torch.rand(2, 3, 50, 70)
    emb = upl(teacher(images), (50, 70))
    assert emb.shape == (2, 16, 25, 35)
    idx = torch.tensor([0, 1, 1])
    uv = torch.tensor([[3.0, 4.0], [69.0, 49.0], [10.5, 20.25]])
    pix = sample_pixels(emb, idx, uv, (50, 70))
    pix.sum().backward()
    assert all(p.grad is not None for p in upl.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_sample_pixels_exact_at_full_resolution() -> None:
    h, w = 7, 11
    emb = _coordinate_map(h, w, stride=1)
    u, v = torch.meshgrid(
        torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="xy"
    )
    uv = torch.stack([u.flatten(), v.flatten()], dim=1)
    idx = torch.zeros(len(uv), dtype=torch.long)
    raw = sample_pixels(emb, idx, uv, (h, w), normalize=False)
    torch.testing.assert_close(raw[:, :2], uv, rtol=0, atol=1e-9)
    # between pixel centres bilinear interpolation of a linear map is exact too
    frac = torch.tensor([[0.25, 0.5], [9.75, 5.5], [3.5, 2.125]], dtype=torch.float64)
    got = sample_pixels(emb, torch.zeros(3, dtype=torch.long), frac, (h, w), normalize=False)
    torch.testing.assert_close(got[:, :2], frac, rtol=0, atol=1e-9)
    normed = sample_pixels(emb, idx, uv, (h, w))
    torch.testing.assert_close(normed, F.normalize(raw, dim=1))


def test_sample_pixels_consistent_at_stride_4() -> None:
    hh, ww = 37, 50  # not multiples of 4: map is 10 x 13, cell j centred on pixel 4j + 1.5
    emb = _coordinate_map(math.ceil(hh / 4), math.ceil(ww / 4), stride=4)
    uv = torch.tensor([[1.5, 1.5], [2.0, 3.0], [20.0, 17.0], [49.0, 36.0], [31.3, 9.7]], dtype=torch.float64)
    idx = torch.zeros(len(uv), dtype=torch.long)
    raw = sample_pixels(emb, idx, uv, (hh, ww), normalize=False)
    torch.testing.assert_close(raw[:, :2], uv, rtol=0, atol=1e-9)
    assert sample_pixels(emb, idx, uv, (hh, ww), output_stride=4, normalize=False).allclose(raw)
    # beyond the outermost cell centre the border value is used
    edge = sample_pixels(emb, torch.zeros(1, dtype=torch.long), torch.tensor([[0.0, 0.0]]).double(), (hh, ww))
    torch.testing.assert_close(edge, F.normalize(torch.tensor([[1.5, 1.5, 100.0]]).double(), dim=1))


def test_sample_pixels_matches_upl_upsampling_across_strides() -> None:
    """Sampling an os=4 map equals reading the exactly-upsampled (os=1) map at integer pixels."""
    torch.manual_seed(0)
    hh, ww = 37, 50
    low = torch.randn(2, 5, math.ceil(hh / 4), math.ceil(ww / 4))
    full = F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)[..., :hh, :ww]
    idx = torch.randint(0, 2, (200,))
    uv = torch.stack([torch.randint(0, ww, (200,)), torch.randint(0, hh, (200,))], dim=1).float()
    a = sample_pixels(low, idx, uv, (hh, ww), normalize=False)
    b = full[idx, :, uv[:, 1].long(), uv[:, 0].long()]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_sample_pixels_handles_unsorted_uneven_batches_and_grads() -> None:
    torch.manual_seed(0)
    emb = torch.randn(3, 4, 9, 12, requires_grad=True)
    idx = torch.tensor([2, 0, 2, 2, 0, 2])  # image 1 has no points
    uv = torch.tensor([[0, 0], [11, 8], [5, 3], [1, 7], [4, 4], [5, 3]]).float()
    got = sample_pixels(emb, idx, uv, (9, 12), normalize=False)
    want = emb[idx, :, uv[:, 1].long(), uv[:, 0].long()]
    torch.testing.assert_close(got, want)
    got.sum().backward()
    assert emb.grad is not None and emb.grad[1].abs().sum() == 0 and emb.grad[2].abs().sum() > 0
    empty = sample_pixels(emb, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2), (9, 12))
    assert empty.shape == (0, 4)


def test_embed_points_equals_dense_path_at_full_resolution() -> None:
    torch.manual_seed(0)
    hh, ww = 45, 61
    upl = UpsamplingProjection(CHANNELS, STRIDES, out_dim=12, output_stride=1, hidden_dim=16)
    feats = _features(2, hh, ww, seed=1)
    idx = torch.randint(0, 2, (300,))
    uv = torch.stack([torch.randint(0, ww, (300,)), torch.randint(0, hh, (300,))], dim=1).float()
    dense = sample_pixels(upl(feats, (hh, ww)), idx, uv, (hh, ww))
    points = upl.embed_points(feats, idx, uv, (hh, ww))
    torch.testing.assert_close(points, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(points.norm(dim=1), torch.ones(300))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"\[1, 2, 4, 8\]"):
        UpsamplingProjection(CHANNELS, STRIDES, output_stride=3)
    with pytest.raises(ValueError, match="strides"):
        UpsamplingProjection(CHANNELS, [8, 16])
    with pytest.raises(ValueError, match="in_channels"):
        UpsamplingProjection([], [])
    with pytest.raises(ValueError, match="out_dim"):
        UpsamplingProjection(CHANNELS, STRIDES, out_dim=0)
    with pytest.raises(ValueError, match="multiple of output_stride"):
        UpsamplingProjection([24, 40], [4, 8], output_stride=8)
    with pytest.raises(ValueError, match="hidden_dim"):
        UpsamplingProjection(CHANNELS, STRIDES, hidden_dim=-1)
    upl = UpsamplingProjection(CHANNELS, STRIDES, out_dim=8)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        upl(_features(1, 32, 32)[:2], (32, 32))
    with pytest.raises(ValueError, match="feature level 0"):
        upl(_features(1, 32, 32), (64, 64))
    emb = torch.randn(1, 8, 16, 16)
    with pytest.raises(ValueError, match="image_index"):
        sample_pixels(emb, torch.zeros(2, dtype=torch.int32), torch.zeros(2, 2), (16, 16))
    with pytest.raises(ValueError, match="image_index values"):
        sample_pixels(emb, torch.tensor([0, 1]), torch.zeros(2, 2), (16, 16))
    with pytest.raises(ValueError, match="uv"):
        sample_pixels(emb, torch.tensor([0, 0]), torch.zeros(3, 2), (16, 16))
    with pytest.raises(ValueError, match="output_stride 2"):
        sample_pixels(emb, torch.tensor([0]), torch.zeros(1, 2), (16, 16), output_stride=2)
