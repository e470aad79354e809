"""PPNCE pinned three ways: a slow reference, analytic values, parametrised shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ppkt.losses import PPNCELoss, build_loss


def reference_ppnce(points: torch.Tensor, pixels: torch.Tensor, tau: float) -> torch.Tensor:
    """Row-by-row InfoNCE with explicit sums, written independently of the library code."""
    p = [row / row.norm() for row in points]
    q = [row / row.norm() for row in pixels]
    total = torch.zeros((), dtype=points.dtype)
    for i in range(len(p)):
        scores = torch.stack([torch.dot(p[i], qj) / tau for qj in q])
        total = total - (scores[i] - torch.log(torch.exp(scores).sum()))
    return total / len(p)


@pytest.mark.parametrize(("n", "d"), [(2, 3), (7, 16), (64, 64)])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_matches_reference(n: int, d: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n * d)
    p, q = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )
    got = PPNCELoss(temperature=tau, num_pairs=0)(p, q)
    torch.testing.assert_close(got, reference_ppnce(p, q, tau))


def test_identical_embeddings_give_log_n() -> None:
    n = 32
    p = torch.ones(n, 8)
    assert PPNCELoss()(p, p).item() == pytest.approx(math.log(n), rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.03, 0.01])
def test_aligned_orthogonal_embeddings_tend_to_zero(tau: float) -> None:
    n = 16
    e = torch.eye(n, dtype=torch.float64)
    # analytic: -log(e^{1/τ} / (e^{1/τ} + (n-1))) — goes to 0 as τ → 0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n - 1))
    assert PPNCELoss(temperature=tau)(e, e).item() == pytest.approx(expected, rel=1e-9)
    assert expected < 1e-3 or tau > 0.02


def test_gradient_flows_to_points_only_when_pixels_detached() -> None:
    p = torch.randn(10, 4, requires_grad=True)
    q = torch.randn(10, 4)
    PPNCELoss()(p, q).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_sampling_caps_pairs_without_replacement() -> None:
    loss = PPNCELoss(num_pairs=100)
    idx = loss.sample(1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert idx.shape == (100,) and idx.unique().numel() == 100 and int(idx.max()) < 1000
    assert torch.equal(loss.sample(50, torch.device("cpu")), torch.arange(50))


def test_normalises_its_inputs() -> None:
    p, q = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(PPNCELoss()(p * 7, q), PPNCELoss()(F.normalize(p, dim=1), q))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        PPNCELoss(temperature=0)
    with pytest.raises(ValueError, match="num_pairs"):
        PPNCELoss(num_pairs=1)
    with pytest.raises(ValueError, match="equal shape"):
        PPNCELoss()(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("nope")
