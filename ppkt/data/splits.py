"""The held-out split: the one rule shared by pretraining and fine-tuning.

Scenes (or, for one-scene pretraining, the frames of a trajectory) are split **by order**: the last
``ceil(test · n)`` items are the test / held-out part, the ``ceil(val · n)`` before them validate, the rest
train. ``ppkt pretrain`` holds out exactly the scenes that ``ppkt finetune`` tests on when both use the same
fraction (``data.heldout`` = ``data.test``) on the same scene list, because both call
:func:`split_by_order`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from ppkt.errors import ConfigError

T = TypeVar("T")

#: the three parts, in the order :func:`split_by_order` returns them
SPLITS = ("train", "val", "test")


def split_counts(n: int, test: float, val: float = 0.0) -> tuple[int, int, int]:
    """``(train, val, test)`` counts of :func:`split_by_order` for ``n`` items."""
    n_test = math.ceil(test * n - 1e-9) if test > 0 else 0
    n_val = math.ceil(val * n - 1e-9) if val > 0 else 0
    return n - n_test - n_val, n_val, n_test


def split_by_order(
    items: Sequence[T], test: float, val: float = 0.0, *, keys: tuple[str, str] = ("data.test", "data.val")
) -> tuple[list[T], list[T], list[T]]:
    """``(train, val, test)``: the last ``ceil(test·n)`` items test, the ``ceil(val·n)`` before them val.

    Raises :class:`ConfigError` naming the config ``keys`` (test, val) when no training item would be left.
    """
    n = len(items)
    n_train, n_val, _ = split_counts(n, test, val)
    if n_train < 1:
        shown = f"{keys[0]}={test}" + (f", {keys[1]}={val}" if val > 0 else "")
        raise ConfigError(f"{shown}: would leave no training item of {n} (lower the fraction or add data)")
    items = list(items)
    return items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]
