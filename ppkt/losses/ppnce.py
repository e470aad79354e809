"""PPNCE: the InfoNCE loss between points and their own pixels (PPKT, Liu et al. 2021).

For ``N`` matched pairs with L2-normalised embeddings ``P`` (points) and ``Q`` (pixels),
``logits = P Qᵀ / τ`` and the loss is the cross-entropy of each row against its diagonal entry: every
point must pick its own pixel among the ``N`` sampled pixels (the other pixels are the negatives).

Under DDP with ``gather_distributed`` the pixels of every process are gathered (with gradients), so each
point's negatives are all ``N`` pixels of the global batch, exactly as in one process with that batch. Only
pixels are gathered: the loss is one-directional (a point picks its pixel). Each process returns its share
of the mean over all points (:meth:`PPNCELoss.mean`), so the mean over processes — what DDP's gradient
averaging optimises — is the single-process loss, even when the processes hold different numbers of pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.distributed import gather_rows, world_size


def sample_pairs(
    num_available: int,
    num_pairs: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Indices of the pairs a loss uses: all ``num_available`` (``num_pairs`` 0 or not fewer), or
    ``num_pairs`` of them drawn without replacement with ``generator`` — uniformly, or with probability
    ∝ ``weights [num_available]`` when given."""
    if num_pairs == 0 or num_available <= num_pairs:
        return torch.arange(num_available, device=device)
    if weights is not None:
        return torch.multinomial(weights, num_pairs, replacement=False, generator=generator)
    return torch.randperm(num_available, generator=generator, device=device)[:num_pairs]


class PPNCELoss(nn.Module):
    """InfoNCE over matched point/pixel embeddings.

    Args:
        temperature: τ > 0 (SLidR: 0.07; the PPKT paper: 0.04).
        num_pairs: at most this many pairs are sampled per call (uniformly, without replacement);
            0 uses all pairs. Under DDP each process samples its own (the global batch has up to
            ``world_size · num_pairs``).
        gather_distributed: under DDP, contrast each point with the pixels of every process (gathered
            with gradients) rather than of its own process only. No effect in one process.
    """

    #: the pixel side this loss reads: the learnable UPL's embeddings
    space = "upl"

    def __init__(
        self, temperature: float = 0.07, num_pairs: int = 4096, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_pairs < 0 or num_pairs == 1:
            raise ValueError(f"num_pairs must be 0 (all) or >= 2, got {num_pairs}")
        self.temperature = temperature
        self.num_pairs = num_pairs
        self.gather_distributed = gather_distributed

    def sample(
        self, num_available: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """Indices of the pairs to use: all of them, or ``num_pairs`` drawn without replacement."""
        return sample_pairs(num_available, self.num_pairs, device, generator)

    def logits(self, points: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Args: ``points [n, D]``, ``pixels [n, D]`` (row i of each is pair i). Returns the ``[n, N]``
        logits of the points against the pixels of every process (``N = n`` without gathering) and ``[n]``
        the column of each point's own pixel."""
        if points.shape != pixels.shape or points.dim() != 2:
            raise ValueError(
                f"expected two [N, D] tensors of equal shape, got {points.shape} and {pixels.shape}"
            )
        if points.shape[0] < 2:
            raise ValueError(f"need at least 2 pairs for a contrastive loss, got {points.shape[0]}")
        # scale the [N, D] side, not the [n, N] logits (one pass less over the largest tensor)
        keys, first = F.normalize(pixels, dim=1) / self.temperature, 0
        if self.gather_distributed:
            keys, first = gather_rows(keys)
        target = torch.arange(first, first + points.shape[0], device=points.device)
        return F.normalize(points, dim=1) @ keys.T, target

    def mean(self, rows: Tensor, logits: Tensor) -> Tensor:
        """This process's share of the mean of a per-point value ``rows [n]`` over the ``N`` points of every
        process: ``rows.sum() · W / N`` (W processes gathered; ``rows.mean()`` in one process). The mean of
        the shares over the processes is the mean over all points, however they are split."""
        processes = world_size() if self.gather_distributed else 1
        return rows.sum() * (processes / logits.shape[1])

    def stats(self, points: Tensor, pixels: Tensor) -> dict[str, Tensor]:
        """``loss`` and ``top1`` (the fraction of points whose own pixel scores highest; no gradient),
        both this process's share of the global means."""
        logits, target = self.logits(points, pixels)
        loss = self.mean(F.cross_entropy(logits, target, reduction="none"), logits)
        with torch.no_grad():
            top1 = self.mean((logits.argmax(dim=1) == target).float(), logits)
        return {"loss": loss, "top1": top1}

    def forward(self, points: Tensor, pixels: Tensor) -> Tensor:
        """Args: ``points [n, D]``, ``pixels [n, D]`` (row i of each is pair i). Returns a scalar."""
        logits, target = self.logits(points, pixels)
        return self.mean(F.cross_entropy(logits, target, reduction="none"), logits)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, num_pairs={self.num_pairs}, "
            f"gather_distributed={self.gather_distributed}"
        )
