"""The transform base class: ``sample -> new sample``, a small class with a ``__repr__``; it copies its
input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ppkt.data.sample import PointSample

S = TypeVar("S", bound=PointSample)


class Transform(Generic[S]):
    """Base class: ``sample -> new sample`` (the input is never modified). ``Transform[PointSample]``
    subclasses that stay generic in ``S`` take point and paired samples alike; ``Transform[PairedSample]``
    ones need images."""

    def __call__(self, sample: S) -> S:
        return self.apply(sample.copy())  # type: ignore[arg-type]

    def apply(self, sample: S) -> S:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform[Any]):
    def __init__(self, transforms: Sequence[Transform[Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Any) -> Any:
        for t in self.transforms:
            sample = t(sample)
        return sample
