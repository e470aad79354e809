"""PPNCE: the InfoNCE loss between points and their own pixels (PPKT, Liu et al. 2021).

For ``N`` matched pairs with L2-normalised embeddings ``P`` (points) and ``Q`` (pixels),
``logits = P Qᵀ / τ`` and the loss is the cross-entropy of each row against its diagonal entry: every
point must pick its own pixel among the ``N`` sampled pixels (the other pixels are the negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PPNCELoss(nn.Module):
    """InfoNCE over matched point/pixel embeddings.

    Args:
        temperature: τ > 0 (SLidR: 0.07; the PPKT paper: 0.04).
        num_pairs: at most this many pairs are sampled per call (uniformly, without replacement);
            0 uses all pairs.
    """

    def __init__(self, temperature: float = 0.07, num_pairs: int = 4096) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_pairs < 0 or num_pairs == 1:
            raise ValueError(f"num_pairs must be 0 (all) or >= 2, got {num_pairs}")
        self.temperature = temperature
        self.num_pairs = num_pairs

    def sample(
        self, num_available: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """Indices of the pairs to use: all of them, or ``num_pairs`` drawn without replacement."""
        if self.num_pairs == 0 or num_available <= self.num_pairs:
            return torch.arange(num_available, device=device)
        return torch.randperm(num_available, generator=generator, device=device)[: self.num_pairs]

    def forward(self, points: Tensor, pixels: Tensor) -> Tensor:
        """Args: ``points [N, D]``, ``pixels [N, D]`` (row i of each is pair i). Returns a scalar."""
        if points.shape != pixels.shape or points.dim() != 2:
            raise ValueError(
                f"expected two [N, D] tensors of equal shape, got {points.shape} and {pixels.shape}"
            )
        if points.shape[0] < 2:
            raise ValueError(f"need at least 2 pairs for a contrastive loss, got {points.shape[0]}")
        # scale the [N, D] side, not the [N, N] logits (one pass less over the largest tensor)
        logits = F.normalize(points, dim=1) @ (F.normalize(pixels, dim=1) / self.temperature).T
        return F.cross_entropy(logits, torch.arange(points.shape[0], device=points.device))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, num_pairs={self.num_pairs}"
