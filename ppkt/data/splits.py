"""Scene splits: the one held-out split shared by pretraining and fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ppkt.data.io.files import natural_key
from ppkt.errors import ConfigError

#: the three splits, in the order of :func:`split_scenes`
SPLITS = ("train", "val", "test")


def _check_names(names: Sequence[str]) -> list[str]:
    ordered = sorted(names, key=natural_key)
    if len(set(ordered)) != len(ordered):
        dup = sorted({n for n in ordered if ordered.count(n) > 1})
        raise ConfigError(f"scene names must be unique, got duplicates {dup}")
    return ordered


def _permutation(names: Sequence[str], seed: int, salt: int) -> list[str]:
    """``names`` (naturally sorted first) in a seeded random order."""
    ordered = _check_names(names)
    perm = np.random.default_rng([seed, salt]).permutation(len(ordered))
    return [ordered[i] for i in perm]


def _check_fraction(fraction: float, what: str) -> None:
    if not 0 < fraction <= 1:
        raise ConfigError(f"{what} must be in (0, 1], got {fraction}")


def split_scenes(
    names: Sequence[str], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[str]]:
    """Split scenes into ``{"train", "val", "test"}`` by the given fractions (they must sum to 1).

    Counts are ``fraction · n`` rounded by largest remainder; every split with a positive fraction gets at
    least one scene (taken from the largest split), so with all three fractions positive at least 3 scenes
    are needed. Each scene lands in exactly one split; each list is naturally sorted.

    Raises:
        ConfigError: bad fractions, duplicate names, or too few scenes for the non-empty splits.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not (f >= 0 and math.isfinite(f)) for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise ConfigError(
            f"split fractions must be 3 non-negative numbers (train, val, test) summing to 1, got {fractions}"
        )
    if fr[0] == 0:
        raise ConfigError(f"the train fraction must be positive, got {fractions}")
    n = len(names)
    needed = sum(f > 0 for f in fr)
    if n < needed:
        raise ConfigError(
            f"cannot split {n} scene(s) into {needed} non-empty splits (fractions {fractions}); "
            f"need at least {needed} scenes"
        )
    exact = [f * n for f in fr]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        while fr[i] > 0 and counts[i] == 0:
            counts[max(range(3), key=lambda j: (counts[j], -j))] -= 1
            counts[i] += 1
    order = _permutation(names, seed, 0)
    out, start = {}, 0
    for split, c in zip(SPLITS, counts):
        out[split] = sorted(order[start : start + c], key=natural_key)
        start += c
    return out
