"""PPNCE pinned three ways: a slow reference, analytic values, parametrised shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ppkt.losses import PPNCELoss, build_loss, lovasz_softmax


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


def jaccard_losses(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """1 − IoU of a hard prediction for every class present in ``labels`` (a plain set computation)."""
    out = []
    for c in range(num_classes):
        gt, pr = (
            set(torch.nonzero(labels == c).flatten().tolist()),
            set(torch.nonzero(pred == c).flatten().tolist()),
        )
        if gt:
            out.append(1 - len(gt & pr) / len(gt | pr))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_equals_jaccard_loss_at_hard_predictions(seed: int) -> None:
    """The Lovász extension agrees with the set function at the vertices: one-hot → mean (1 − IoU)."""
    g = torch.Generator().manual_seed(seed)
    n, c = 200, 5
    labels = torch.randint(0, c - 1, (n,), generator=g)  # class c-1 is absent from the labels
    pred = torch.where(torch.rand(n, generator=g) < 0.6, labels, torch.randint(0, c, (n,), generator=g))
    probs = F.one_hot(pred, c).double()
    expected = sum(jaccard_losses(pred, labels, c)) / len(jaccard_losses(pred, labels, c))
    assert lovasz_softmax(probs, labels).item() == pytest.approx(expected, abs=1e-12)
    # ignored points are left out, exactly
    ign = labels.clone()
    ign[:50] = -1
    sub = lovasz_softmax(probs[50:], labels[50:])
    assert lovasz_softmax(probs, ign).item() == pytest.approx(sub.item(), abs=1e-12)


def test_lovasz_is_zero_when_perfect_and_trains_a_rare_class() -> None:
    labels = torch.tensor([0] * 95 + [1] * 5)
    assert lovasz_softmax(F.one_hot(labels, 3).float(), labels).item() == pytest.approx(0.0)
    # all-majority prediction: class 0 IoU 0.95, class 1 IoU 0 → mean loss 0.525 (CE alone barely sees it)
    assert lovasz_softmax(F.one_hot(torch.zeros(100, dtype=torch.long), 3).float(), labels).item() == (
        pytest.approx(0.525)
    )
    logits = torch.zeros(100, 3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        lovasz_softmax(logits.softmax(1), labels).backward()
        opt.step()
    assert torch.equal(logits.argmax(1), labels)
    assert lovasz_softmax(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).item() == 0.0
    with pytest.raises(ValueError, match="labels must be in"):
        lovasz_softmax(torch.rand(4, 3), torch.tensor([0, 1, 3, -1]))
