"""Losses and their factory (``name → class``).

The pretraining objective (``loss.name``) is one name of :data:`LOSSES` or several joined by ``+``
(``ppnce+distill``): :func:`build_pretext_loss` builds their weighted sum (:class:`PretextLoss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ppkt.losses.distill import DistillLoss
from ppkt.losses.lovasz import lovasz_softmax
from ppkt.losses.ppnce import PPNCELoss
from ppkt.losses.pretext import PretextLoss

LOSSES: dict[str, type[nn.Module]] = {"ppnce": PPNCELoss, "distill": DistillLoss}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name; raises ``ValueError`` listing the known names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)


def loss_terms(name: str) -> list[str]:
    """The term names of ``loss.name`` (``"ppnce+distill"`` → ``["ppnce", "distill"]``); raises
    ``ValueError`` for an unknown or repeated term."""
    terms = [t.strip() for t in name.split("+")]
    unknown = [t for t in terms if t not in LOSSES]
    if unknown:
        raise ValueError(f"unknown loss {unknown[0]!r}; known: {sorted(LOSSES)} (or several joined by '+')")
    if len(set(terms)) != len(terms):
        raise ValueError(f"loss {name!r} names a term twice")
    return terms


def build_pretext_loss(
    name: str,
    weights: Sequence[float] | None = None,
    num_pairs: int = 4096,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> PretextLoss:
    """The weighted sum of the terms of ``name``; ``options[term]`` are that term's constructor arguments."""
    options = options or {}
    terms = {t: build_loss(t, **dict(options.get(t, {}))) for t in loss_terms(name)}
    return PretextLoss(terms, weights, num_pairs)


__all__ = [
    "LOSSES",
    "DistillLoss",
    "PPNCELoss",
    "PretextLoss",
    "build_loss",
    "build_pretext_loss",
    "loss_terms",
    "lovasz_softmax",
]
