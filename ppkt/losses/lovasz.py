"""The Lovász-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018): a convex surrogate of 1 − IoU.

For class ``c`` let ``e_i = |[y_i = c] − p_ic|`` be each point's error. With the errors sorted
(largest first), the loss of class ``c`` is ``Σ_k e_(k) · g_k``, where ``g`` is the discrete derivative
of the Jaccard loss ``1 − |gt ∩ pred| / |gt ∪ pred|`` along that order (the Lovász extension of the
Jaccard set function). At one-hot probabilities it equals the Jaccard loss of the hard prediction
exactly, so minimising it optimises IoU directly — each class counts equally, however few its points.
SLidR fine-tunes with it next to cross-entropy. The loss is the mean over the classes present.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int = -1) -> Tensor:
    """Lovász-softmax of ``probs [N, C]`` (rows sum to 1) against ``labels [N]``; ``ignore_index`` rows are
    left out. Mean over the classes present among the kept labels; 0 (with a gradient path) if none."""
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs [N, C] and labels [N], got {tuple(probs.shape)}, {tuple(labels.shape)}"
        )
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    C = probs.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= C):
        raise ValueError(
            f"labels must be in [0, {C}) or {ignore_index}, got [{labels.min()}, {labels.max()}]"
        )
    fg = torch.nn.functional.one_hot(labels, C).to(probs.dtype)  # [N, C]
    present = fg.sum(0) > 0
    if not bool(present.any()):
        return probs.sum() * 0.0
    fg, probs = fg[:, present], probs[:, present]
    errors, order = (fg - probs).abs().sort(dim=0, descending=True)
    fg_sorted = fg.gather(0, order)
    gts = fg_sorted.sum(0, keepdim=True)
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union  # [N, C'], the Jaccard loss of the first k sorted points
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    return (errors * grad).sum(0).mean()
