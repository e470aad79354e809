"""Feature distillation without negatives (ScaLR, Puy et al. 2024): pull each point's embedding onto the
frozen teacher's feature at its own pixel.

Both sides are L2-normalised, then for ``N`` matched pairs ``p̂_i``, ``q̂_i``:

* ``distance="l2"`` (ScaLR's): ``mean_i ‖p̂_i − q̂_i‖₂``, the Euclidean distance of the unit vectors;
* ``distance="cosine"``: ``mean_i (1 − p̂_i · q̂_i)`` (``= ½ ‖p̂_i − q̂_i‖₂²``).

Aligned pairs give 0. There are no negatives, so the pixel side must be a fixed target (the frozen
teacher's features), never a learnable projection: with a learnable 2D side both sides would collapse onto
one constant vector at zero loss. In ScaLR the point network's last layer maps to the teacher's feature
dimension and the teacher's maps are upsampled bilinearly to the pixels; ``ppkt`` does the same
(:class:`~ppkt.models.heads.ProjectionHead` to the summed channels of the teacher's layers, each layer
sampled bilinearly at the pixel and concatenated, then normalised).

Under DDP with ``gather_distributed`` each process returns its share of the mean over the pairs of every
process (``sum · W / N_global``), so DDP's gradient averaging optimises the single-process mean even when
the processes hold different numbers of pairs; pairs never interact, so nothing else is gathered.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.distributed import sum_over_processes, world_size

DISTANCES: tuple[str, ...] = ("l2", "cosine")


class DistillLoss(nn.Module):
    """Mean distance between unit point embeddings and unit teacher features, no negatives.

    Args:
        distance: ``"l2"`` (ScaLR: ``‖p̂ − q̂‖₂``) or ``"cosine"`` (``1 − cos``).
        gather_distributed: under DDP, each process returns its share of the mean over all processes'
            pairs (see the module docstring). No effect in one process.
    """

    #: the pixel side this loss reads: the frozen teacher's features (a learnable side would collapse)
    space = "teacher"

    def __init__(self, distance: Literal["l2", "cosine"] = "l2", gather_distributed: bool = False) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {list(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.gather_distributed = gather_distributed

    def per_pair(self, points: Tensor, targets: Tensor) -> Tensor:
        """Args: ``points [N, D]``, ``targets [N, D]`` (row i of each is pair i). Returns ``[N]``."""
        if points.shape != targets.shape or points.dim() != 2:
            raise ValueError(
                f"expected two [N, D] tensors of equal shape, got {points.shape} and {targets.shape}"
            )
        p, q = F.normalize(points, dim=1), F.normalize(targets, dim=1)
        if self.distance == "l2":
            return torch.linalg.vector_norm(p - q, dim=1)
        return 1.0 - (p * q).sum(dim=1)

    def mean(self, rows: Tensor) -> Tensor:
        """This process's share of the mean of ``rows [n]`` over the pairs of every process."""
        if not self.gather_distributed or world_size() == 1:
            return rows.mean() if rows.numel() else rows.sum()
        total = sum_over_processes(rows.shape[0], rows.device)
        return rows.sum() * (world_size() / max(total, 1))

    def stats(self, points: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """``loss`` and ``cos`` (the mean cosine similarity of the pairs, a monitor without gradient)."""
        rows = self.per_pair(points, targets)
        with torch.no_grad():
            cos = self.mean((F.normalize(points, dim=1) * F.normalize(targets, dim=1)).sum(dim=1))
        return {"loss": self.mean(rows), "cos": cos}

    def forward(self, points: Tensor, targets: Tensor) -> Tensor:
        """Args: ``points [N, D]``, ``targets [N, D]`` (row i of each is pair i). Returns a scalar."""
        return self.mean(self.per_pair(points, targets))

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, gather_distributed={self.gather_distributed}"
