"""Plane-aware pair sampling: RANSAC planes of a sample, and the pair weights that give them a fixed share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ppkt.config import PretrainConfig, load_config
from ppkt.data.sample import PairedBatch
from ppkt.errors import ConfigError
from ppkt.geometry.planes import plane_mask
from ppkt.losses.ppnce import sample_pairs
from ppkt.training.pretrain_module import plane_pair_weights

from .conftest import assert_mentions


def _room(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel centres of a floor (z = 0), a wall (x = 0) and a solid box standing on the floor; ``[N]``
    True for the floor and wall."""
    g = torch.Generator().manual_seed(seed)
    ij = torch.stack(torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij"), -1).reshape(-1, 2)
    floor = torch.cat([ij + 1, torch.zeros(len(ij), 1)], 1)
    wall = torch.cat([torch.zeros(len(ij), 1), ij + 1], 1)[:, [0, 1, 2]]
    cube = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    box = cube + torch.tensor([15, 15, 1])
    pts = torch.cat([floor, wall, box.float()])[torch.randperm(2 * len(ij) + len(box), generator=g)]
    on = (pts[:, 2] == 0) | (pts[:, 0] == 0)
    return pts.float(), on


def test_plane_mask_finds_floor_and_wall_not_the_box() -> None:
    pts, on = _room()
    found = plane_mask(pts, threshold=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(found, on)


def test_plane_mask_is_deterministic_and_handles_tiny_clouds() -> None:
    pts, _ = _room()
    a = plane_mask(pts, threshold=0.5, generator=torch.Generator().manual_seed(3))
    b = plane_mask(pts, threshold=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not plane_mask(pts[:2], threshold=0.5).any()
    blob = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * 10  # no plane holds 5 %
    assert plane_mask(blob, threshold=0.05, generator=torch.Generator().manual_seed(0)).sum() == 0


def _batch() -> tuple[PairedBatch, torch.Tensor]:
    """Two samples (the room, and the room shifted), one pair per voxel, the second sample's twice."""
    pts, on = _room()
    coords = torch.cat(
        [torch.cat([torch.zeros(len(pts), 1), pts], 1), torch.cat([torch.ones(len(pts), 1), pts + 5], 1)]
    ).long()
    n = len(pts)
    pair_voxel = torch.cat([torch.arange(n), torch.arange(n, 2 * n), torch.arange(n, 2 * n)])
    batch = PairedBatch(
        coords=coords,
        feats=torch.zeros(2 * n, 3),
        offset=torch.tensor([n, 2 * n]),
        points=coords[:, 1:].float(),
        point_offset=torch.tensor([n, 2 * n]),
        inverse=torch.arange(2 * n),
        pair_voxel=pair_voxel,
    )
    return batch, torch.cat([on, on, on])


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 1.0])
def test_pair_weights_give_the_planes_their_share_in_every_sample(share: float) -> None:
    batch, pair_on = _batch()
    w = plane_pair_weights(batch, share, torch.Generator().manual_seed(0)).double()
    first = torch.arange(len(w)) < len(w) // 3
    for sel in (first, ~first):
        assert float(w[sel & pair_on].sum() / w[sel].sum()) == pytest.approx(share, abs=1e-6)
    # each sample keeps the weight of its pairs: the second has twice the first's
    assert float(w[~first].sum() / w[first].sum()) == pytest.approx(2.0, rel=1e-6)
    idx = sample_pairs(len(w), 600, torch.device("cpu"), torch.Generator().manual_seed(0), w.float())
    assert len(set(idx.tolist())) == 600  # without replacement
    if 0 < share < 1:
        assert float(pair_on[idx].float().mean()) == pytest.approx(share, abs=0.05)


def test_plane_share_config_checks(tmp_path: Path) -> None:
    for override, parts in [
        ("loss.plane_share=1.5", ["loss.plane_share", "[0, 1]"]),
        ("loss.num_pairs=0", ["loss.plane_share", "num_pairs"]),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(PretrainConfig, None, ["loss.plane_share=0.5", override])
        assert_mentions(e.value, *parts)


def test_pretraining_with_plane_aware_pairs_draws_the_same_pairs_every_time(tiny_synth: Path) -> None:
    """A real batch of the tiny rooms: the module's plane-aware draw is reproducible from the step's
    generator and gives the planes the configured share of the drawn pairs (when enough remain)."""
    from ppkt.training.data import frame_splits, make_loader
    from ppkt.training.pretrain_module import PPKTPretrainModule

    from .conftest import TINY_PRETRAIN

    cfg = load_config(
        PretrainConfig,
        None,
        [f"data.root={tiny_synth}", *TINY_PRETRAIN, "loss.plane_share=0.25", "teacher.cache=false"],
    )
    batch = next(iter(make_loader(cfg.data, frame_splits(cfg.data).train, 2, train=True, num_workers=0)))
    module = PPKTPretrainModule.from_config(cfg, 3)
    a = module(batch, module.pair_generator(0, 0))
    b = module(batch, module.pair_generator(0, 0))
    assert torch.equal(a["loss"], b["loss"]) and torch.isfinite(a["loss"])
    w = plane_pair_weights(batch, 0.25, torch.Generator().manual_seed(0))
    assert float(w.sum()) == pytest.approx(batch.pair_voxel.shape[0], rel=1e-4)
    assert float(a["pairs"]) == min(256, batch.pair_voxel.shape[0])
