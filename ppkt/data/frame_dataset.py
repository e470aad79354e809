"""Frame datasets for pretraining: which frames, the held-out split, and bad-frame handling."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from torch.utils.data import Dataset

from ppkt.data.pairing import frame_to_sample
from ppkt.data.sample import PairedBatch, PairedSample, collate
from ppkt.data.splits import split_by_order, split_counts
from ppkt.data.teacher_cache import FeatureCache
from ppkt.data.transforms import AttachCachedFeatures
from ppkt.data.types import FrameRef, FrameSource
from ppkt.errors import ConfigError, DataError


def split_frames(
    folders: Sequence[FrameSource], heldout: float, mode: str = "auto", frame_skip: int = 1
) -> tuple[list[FrameRef], list[FrameRef]]:
    """Split frames into (train, held-out).

    ``mode="scenes"`` holds out the last ``ceil(heldout · #scenes)`` scenes
    (:func:`~ppkt.data.splits.split_by_order`, the rule of fine-tuning's test split); ``"tail"`` holds out
    the last ``heldout`` fraction of every scene's trajectory; ``"auto"`` is ``scenes`` with ≥ 2 scenes,
    else ``tail``. Every ``frame_skip``-th frame is used.
    """
    if mode == "auto":
        mode = "scenes" if len(folders) >= 2 else "tail"
    train: list[FrameRef] = []
    held: list[FrameRef] = []
    if mode == "scenes":
        train_scenes, _, held_scenes = split_by_order(folders, heldout, keys=("data.heldout", ""))
        train = [FrameRef(f, j) for f in train_scenes for j in range(0, len(f), frame_skip)]
        held = [FrameRef(f, j) for f in held_scenes for j in range(0, len(f), frame_skip)]
    elif mode == "tail":
        for f in folders:
            refs = [FrameRef(f, j) for j in range(0, len(f), frame_skip)]
            n_train = split_counts(len(refs), heldout)[0]
            train.extend(refs[:n_train])
            held.extend(refs[n_train:])
    else:
        raise ConfigError(f"data.heldout_mode: {mode!r} is not one of ['auto', 'scenes', 'tail']")
    if not train:
        raise DataError("no training frames left after the held-out split")
    return train, held


class FrameDataset(Dataset[PairedSample | None]):
    """RGB-D frames → transformed samples.

    With a ``feature_cache`` every sample carries its frame's cached teacher maps (``teacher_cache``, an
    identity ``view``); a frame missing from the cache is an error (fill the cache first).
    With ``skip_bad=True`` a frame that fails to read (a :class:`DataError`) is skipped with a warning
    naming the file (the item is ``None`` and :func:`collate_skip` drops it); otherwise the error propagates.
    """

    def __init__(
        self,
        frames: Sequence[FrameRef],
        transform: Callable[[PairedSample], PairedSample],
        *,
        min_depth: float = 0.0,
        max_depth: float = float("inf"),
        skip_bad: bool = False,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        self.frames = list(frames)
        self.attach = None if feature_cache is None else AttachCachedFeatures(feature_cache)
        self.transform = transform
        self.min_depth, self.max_depth = min_depth, max_depth
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> PairedSample | None:
        ref = self.frames[i]
        try:
            frame = ref.folder.read(ref.index)
            sample = frame_to_sample(frame, min_depth=self.min_depth, max_depth=self.max_depth)
            if sample.points.shape[0] == 0:
                raise DataError(
                    f"{frame.depth_path}: no depth in range [{self.min_depth}, {self.max_depth}] m"
                )
        except DataError as e:
            if not self.skip_bad:
                raise
            warnings.warn(f"skipping bad frame {ref.name}: {e}", stacklevel=2)
            return None
        sample.source = ref
        if self.attach is not None:
            sample = self.attach(sample)
        return self.transform(sample)


def collate_skip(items: list[PairedSample | None]) -> PairedBatch | None:
    """:func:`collate` without the skipped (``None``) items; ``None`` when nothing is left."""
    samples = [s for s in items if s is not None]
    return collate(samples) if samples else None
