"""The distillation objective (ScaLR) and the combined pretext loss, pinned three ways: a slow reference,
analytic values, parametrised shapes; then the config keys and one pretraining run with both terms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ppkt.cli.main import main
from ppkt.config import PretrainConfig, load_config
from ppkt.errors import ConfigError
from ppkt.losses import DistillLoss, PPNCELoss, PretextLoss, build_pretext_loss, loss_terms
from tests.conftest import TINY_PRETRAIN, assert_mentions


def reference_distill(points: torch.Tensor, targets: torch.Tensor, distance: str) -> torch.Tensor:
    """Pair by pair with explicit sums, written independently of the library code."""
    total = torch.zeros((), dtype=points.dtype)
    for p, q in zip(points, targets):
        p = p / torch.sqrt((p * p).sum())
        q = q / torch.sqrt((q * q).sum())
        term = torch.sqrt(((p - q) ** 2).sum()) if distance == "l2" else 1 - (p * q).sum()
        total = total + term
    return total / len(points)


@pytest.mark.parametrize(("n", "d"), [(1, 3), (7, 16), (64, 512)])
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_matches_reference(n: int, d: int, distance: str) -> None:
    g = torch.Generator().manual_seed(n * d)
    p, q = torch.randn(n, d, generator=g).double(), torch.randn(n, d, generator=g).double()
    torch.testing.assert_close(DistillLoss(distance)(p, q), reference_distill(p, q, distance))  # type: ignore[arg-type]


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_analytic_values(distance: str) -> None:
    """Aligned pairs (any positive scale) → 0; orthogonal → √2 (l2) or 1 (cosine); opposite → 2 and 2."""
    loss = DistillLoss(distance)  # type: ignore[arg-type]
    e = torch.eye(4, dtype=torch.float64)
    assert loss(3 * e, 0.5 * e).item() == pytest.approx(0.0, abs=1e-12)
    orthogonal = e.roll(1, dims=1)
    assert loss(e, orthogonal).item() == pytest.approx(math.sqrt(2) if distance == "l2" else 1.0)
    assert loss(e, -e).item() == pytest.approx(2.0)
    # cosine = ½ l2²: on pairs at one angle the two distances are tied exactly
    angle = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    l2, cos = DistillLoss("l2")(*angle).item(), DistillLoss("cosine")(*angle).item()
    assert cos == pytest.approx(0.5 * l2**2) and cos == pytest.approx(0.4)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_gradient_matches_the_reference_and_moves_points_onto_targets(distance: str) -> None:
    g = torch.Generator().manual_seed(0)
    p0, q = torch.randn(12, 5, generator=g).double(), torch.randn(12, 5, generator=g).double()
    p = p0.clone().requires_grad_(True)
    DistillLoss(distance)(p, q).backward()  # type: ignore[arg-type]
    r = p0.clone().requires_grad_(True)
    reference_distill(r, q, distance).backward()
    assert p.grad is not None and r.grad is not None
    torch.testing.assert_close(p.grad, r.grad)
    assert torch.autograd.gradcheck(lambda x: DistillLoss(distance)(x, q), (p0.clone().requires_grad_(True),))  # type: ignore[arg-type]
    # descending the loss aligns the points with their targets: it falls towards 0
    x = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        value = DistillLoss(distance)(x, q)  # type: ignore[arg-type]
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.05 * losses[0]
    assert F.cosine_similarity(x.detach(), q).min() > 0.95


def test_stats_report_the_mean_cosine() -> None:
    p, q = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    stats = DistillLoss("cosine").stats(p, q)
    assert stats["cos"].item() == pytest.approx(0.5) and stats["loss"].item() == pytest.approx(0.5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="distance"):
        DistillLoss("l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal shape"):
        DistillLoss()(torch.zeros(3, 2), torch.zeros(3, 4))


# ---------------------------------------------------------------------------------------- combination


def test_combination_is_the_weighted_sum_of_its_terms() -> None:
    g = torch.Generator().manual_seed(1)
    upl = (torch.randn(9, 8, generator=g).double(), torch.randn(9, 8, generator=g).double())
    teacher = (torch.randn(9, 20, generator=g).double(), torch.randn(9, 20, generator=g).double())
    ppnce, distill = PPNCELoss(temperature=0.1, num_pairs=0), DistillLoss("l2")
    both = PretextLoss({"ppnce": ppnce, "distill": distill}, [0.5, 2.0], num_pairs=0)
    assert both.spaces == ["upl", "teacher"]
    out = both({"upl": upl, "teacher": teacher})
    torch.testing.assert_close(out["loss"], 0.5 * ppnce(*upl) + 2.0 * distill(*teacher))
    torch.testing.assert_close(out["loss_ppnce"], ppnce(*upl))
    torch.testing.assert_close(out["loss_distill"], distill(*teacher))
    assert {"top1", "cos"} <= set(out)
    single = build_pretext_loss("distill", num_pairs=0)({"teacher": teacher})
    assert set(single) == {"loss", "cos"}  # one term: no per-term copy of the loss
    torch.testing.assert_close(single["loss"], distill(*teacher))


def test_factory_parses_names_and_rejects_bad_ones() -> None:
    assert loss_terms("ppnce") == ["ppnce"] and loss_terms("ppnce + distill") == ["ppnce", "distill"]
    built = build_pretext_loss("distill+ppnce", options={"distill": {"distance": "cosine"}})
    assert list(built.terms) == ["distill", "ppnce"] and built.terms["distill"].distance == "cosine"
    with pytest.raises(ValueError, match="unknown loss 'nce'"):
        loss_terms("ppnce+nce")
    with pytest.raises(ValueError, match="twice"):
        loss_terms("ppnce+ppnce")
    with pytest.raises(ValueError, match="one weight per term"):
        build_pretext_loss("ppnce+distill", weights=[1.0])
    with pytest.raises(ValueError, match="needs the 'teacher'"):
        build_pretext_loss("distill")({"upl": (torch.zeros(2, 3), torch.zeros(2, 3))})


@pytest.mark.parametrize(
    ("override", "parts"),
    [
        ("loss.name=ppnce+nce", ["loss.name", "'nce'"]),
        ("loss.weights=[1.0, 2.0]", ["loss.weights", "one weight per term"]),
        ("loss.distance=l1", ["loss.distance", "l1"]),
    ],
)
def test_config_errors_name_the_key(override: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, overrides=[override])
    assert_mentions(e.value, *parts)
    with pytest.raises(ConfigError, match="must be > 0"):
        load_config(PretrainConfig, overrides=["loss.name=ppnce+distill", "loss.weights=[1.0, 0.0]"])


# ------------------------------------------------------------------------------------- in pretraining


def test_module_distill_space_and_frozen_unused_side(tiny_synth: Path) -> None:
    """``distill`` alone: the student's distill head maps to the teacher's summed channels and is compared
    with the teacher's own features at each pixel; the unused head and UPL are frozen (no gradient)."""
    from ppkt.config import from_dict, to_dict
    from ppkt.training.data import frame_splits, make_loader, num_input_features
    from ppkt.training.pretrain_module import PPKTPretrainModule

    cfg = load_config(
        PretrainConfig, overrides=[f"data.root={tiny_synth}", *TINY_PRETRAIN, "loss.name=distill"]
    )
    module = PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features))
    assert module.retrieval_space == "teacher"
    assert not any(p.requires_grad for p in [*module.head.parameters(), *module.upl.parameters()])
    dim = sum(module.teacher.out_channels)
    assert module.distill_head.linear.out_features == dim
    splits = frame_splits(from_dict(PretrainConfig, to_dict(cfg)).data, verbose=False)
    batch = next(iter(make_loader(cfg.data, splits.train[:2], 2, train=False)))
    out = module(batch, torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "cos", "pairs", "voxels"} and 0 < out["loss"].item() <= 2
    out["loss"].backward()
    assert module.distill_head.linear.weight.grad is not None
    assert all(p.grad is None for p in module.upl.parameters())
    # the pixel side is the teacher's feature itself: unit vectors of the teacher's summed channels
    idx = torch.arange(5)
    q = module.pixel_embeddings(
        module.teacher_features(batch), batch.image_size, batch.pair_image[idx], batch.pair_uv[idx]
    )
    assert q.shape == (5, dim) and torch.allclose(q.norm(dim=1), torch.ones(5))


def test_pretraining_with_both_terms(tiny_synth: Path, tmp_path: Path) -> None:
    """``loss.name=ppnce+distill`` trains end to end; the terms are logged, the pretext check is written."""
    out = tmp_path / "run"
    args = [f"data.root={tiny_synth}", *TINY_PRETRAIN, "loss.name=ppnce+distill", "loss.weights=[1.0, 2.0]"]
    assert main(["pretrain", "--out", str(out), *args, "trainer.max_steps=2", "teacher.cache=false"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2 and math.isfinite(m["loss_initial"]) and math.isfinite(m["loss_final"])
    assert 0 <= m["retrieval_top1_heldout"] <= 1
    logged = (next((out / "csv").glob("version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss_ppnce", "train/loss_distill", "train/top1", "train/cos"} <= set(logged.split(","))
