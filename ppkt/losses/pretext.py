"""The pretraining objective: one pretext loss, or a weighted sum of several, over one set of sampled pairs.

Every term is a loss module with a ``space`` (which point/pixel embeddings it compares: ``"upl"``, the
projection head against the learnable UPL, for PPNCE; ``"teacher"``, a head to the teacher's dimension
against the frozen teacher features, for distillation) and ``stats(points, pixels) -> dict`` whose ``loss``
entry is the term's value (other entries are monitors such as ``top1``). The caller embeds the sampled pairs
once per space the terms need (:attr:`PretextLoss.spaces`) and passes them by space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from ppkt.losses.ppnce import sample_pairs


class PretextTerm(Protocol):
    """What :class:`PretextLoss` asks of a term (a loss module)."""

    space: str

    def stats(self, points: Tensor, pixels: Tensor) -> dict[str, Tensor]: ...


class PretextLoss(nn.Module):
    """``Σ_k w_k · loss_k`` over the same pairs.

    Args:
        terms: ``name → loss module`` (each with ``space`` and ``stats``), in order.
        weights: one weight ``> 0`` per term (default 1 each).
        num_pairs: at most this many pairs are used per call (:meth:`sample`); 0 = all.

    ``forward(inputs)`` takes ``space → (points [N, D], pixels [N, D])`` and returns ``loss`` (the weighted
    sum), ``loss_<name>`` per term when there are several (unweighted), and every term's monitors.
    """

    def __init__(
        self, terms: Mapping[str, nn.Module], weights: Sequence[float] | None = None, num_pairs: int = 4096
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a pretext loss needs at least one term")
        weights = [1.0] * len(terms) if weights is None or len(weights) == 0 else list(weights)
        if len(weights) != len(terms):
            raise ValueError(f"expected one weight per term {list(terms)}, got {weights}")
        if not all(w > 0 for w in weights):
            raise ValueError(f"weights must be > 0, got {weights}")
        if num_pairs < 0 or num_pairs == 1:
            raise ValueError(f"num_pairs must be 0 (all) or >= 2, got {num_pairs}")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(zip(terms, weights, strict=True))
        self.num_pairs = num_pairs

    @property
    def spaces(self) -> list[str]:
        """The embedding spaces the terms read, in term order, each once."""
        return list(dict.fromkeys(self.term(n).space for n in self.weights))

    def term(self, name: str) -> PretextTerm:
        return cast(PretextTerm, self.terms[name])

    def sample(
        self,
        num_available: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Indices of the pairs to use: all of them, or ``num_pairs`` drawn without replacement (uniformly,
        or ∝ ``weights``: :func:`~ppkt.losses.ppnce.sample_pairs`)."""
        return sample_pairs(num_available, self.num_pairs, device, generator, weights)

    def forward(self, inputs: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name in self.weights:
            term = self.term(name)
            if term.space not in inputs:
                raise ValueError(
                    f"loss term {name!r} needs the {term.space!r} embeddings, got {list(inputs)}"
                )
            stats = dict(term.stats(*inputs[term.space]))
            value = stats.pop("loss")
            total = self.weights[name] * value if total is None else total + self.weights[name] * value
            if len(self.terms) > 1:
                out[f"loss_{name}"] = value.detach()
            out.update(stats)
        assert total is not None
        return {"loss": total, **out}

    def extra_repr(self) -> str:
        return f"weights={self.weights}, num_pairs={self.num_pairs}"
