"""Comparing a state dict read from a file with the one a model expects."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def state_dict_mismatch(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str = "file"
) -> tuple[list[str], list[str], list[str]]:
    """``(missing keys, unexpected keys, shape mismatches)`` of ``state`` against ``expected``, each sorted;
    a shape mismatch reads ``"key: <source> (shape) vs model (shape)"``. All empty: ``state`` fits."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {source} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, shapes
