"""PPNCE pinned three ways: a slow reference, analytic values, parametrised shapes."""

from __future__ import annotations

import itertools
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


@pytest.mark.parametrize("n", [2, 16])
def test_aligned_orthogonal_embeddings_tend_to_zero(n: int) -> None:
    e = torch.eye(n, dtype=torch.float64)
    taus = [1.0, 0.3, 0.1, 0.05, 0.01]
    got = [PPNCELoss(temperature=tau)(e, e).item() for tau in taus]
    for tau, loss in zip(taus, got):
        # analytic: -log(e^{1/τ} / (e^{1/τ} + (n-1))) = log(1 + (n-1) e^{-1/τ}) — goes to 0 as τ → 0;
        # the library's log-sum-exp of logits of size 1/τ rounds to a few ulps of 1/τ
        expected = math.log1p((n - 1) * math.exp(-1 / tau))
        assert loss == pytest.approx(expected, rel=1e-9, abs=8 * 2.0**-52 / tau), tau
    assert all(a > b for a, b in itertools.pairwise(got))  # strictly falling as τ falls ...
    assert got[0] > 0.3 and 0 <= got[-1] < 1e-12  # ... from a clear loss to (numerically) zero
    assert got[0] < math.log(n)  # even at τ = 1: below the loss of identical embeddings (log N)


def test_gradient_flows_to_both_sides_and_matches_the_reference() -> None:
    """The loss trains the 3D side (points) and the 2D side (the UPL's pixels) alike; a detached side gets
    no gradient and leaves the other side's gradient unchanged; both match the reference's autograd."""
    g = torch.Generator().manual_seed(0)
    p0, q0 = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g).double()
    tau = 0.1

    def grads(loss_fn, detach_pixels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        p, q = p0.clone().requires_grad_(True), q0.clone().requires_grad_(True)
        loss_fn(p, q.detach() if detach_pixels else q).backward()
        assert p.grad is not None
        return p.grad, q.grad

    gp, gq = grads(PPNCELoss(temperature=tau), detach_pixels=False)
    rp, rq = grads(lambda p, q: reference_ppnce(p, q, tau), detach_pixels=False)
    assert gq is not None and rq is not None
    for got, want in ((gp, rp), (gq, rq)):
        assert torch.isfinite(got).all() and got.abs().sum() > 1e-3
        torch.testing.assert_close(got, want)
    dp, dq = grads(PPNCELoss(temperature=tau), detach_pixels=True)
    assert dq is None  # nothing flows into detached pixels ...
    torch.testing.assert_close(dp, gp)  # ... and the points' gradient does not depend on it


@pytest.mark.parametrize("model", ["embeddings", "linear"])
def test_loss_falls_on_a_fixed_batch(model: str) -> None:
    """20 Adam steps on one fixed batch of pairs (learnable point embeddings, or a linear map of fixed point
    features) bring the PPNCE loss well down; every step's loss equals the reference's, and so does the
    gradient at the first and the last step."""
    g = torch.Generator().manual_seed(0)
    n, d, tau, steps = 16, 8, 0.07, 20
    pixels = torch.randn(n, d, generator=g, dtype=torch.float64)
    if model == "embeddings":
        params = [torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)]
        points = lambda: params[0]  # noqa: E731
    else:
        x = torch.randn(n, 6, generator=g, dtype=torch.float64)
        params = [(0.1 * torch.randn(6, d, generator=g, dtype=torch.float64)).requires_grad_(True)]
        points = lambda: x @ params[0]  # noqa: E731
    loss_fn = PPNCELoss(temperature=tau, num_pairs=0)
    opt = torch.optim.Adam(params, lr=0.05)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(points(), pixels)
        loss.backward()
        if step in (0, steps - 1):
            ref = reference_ppnce(points(), pixels, tau)
            (ref_grad,) = torch.autograd.grad(ref, params)
            torch.testing.assert_close(params[0].grad, ref_grad)
        else:
            with torch.no_grad():
                ref = reference_ppnce(points(), pixels, tau)
        torch.testing.assert_close(loss.detach(), ref.detach())
        losses.append(loss.item())
        opt.step()
    final = loss_fn(points(), pixels).item()
    assert losses[0] > 0.5 * math.log(n)  # untrained: near chance (log N), not already solved
    assert final < 0.5 * losses[0], losses  # a clear fall, not noise
    assert final < min(losses[:5])


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
