"""The SemanticKITTI protocol: the official learning map (raw ids → 19 classes), the sequence split, and the
1 % training split of the SLidR lineage.

The learning map is ``learning_map`` of the benchmark's ``semantic-kitti.yaml`` (PRBonn/semantic-kitti-api):
moving classes fold into their static class, ``outlier``, ``other-structure`` and ``other-object`` into
unlabelled. ppkt's ids are the benchmark's class ids as written there: 0 = unlabelled (ignored), 1 … 19
the classes of :data:`CLASS_NAMES` (a segmentation head predicts ``id − 1``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

#: ppkt class id → name (0 = unlabelled; ``semantic-kitti.yaml``'s ``learning_map_inv`` order)
CLASS_NAMES: tuple[str, ...] = (
    "unlabelled",
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)

#: raw SemanticKITTI id (lower 16 bits of a ``.label`` entry) → ppkt class id; the raw name in the comment
LEARNING_MAP: dict[int, int] = {
    0: 0,  # unlabeled
    1: 0,  # outlier
    10: 1,  # car
    11: 2,  # bicycle
    13: 5,  # bus → other-vehicle
    15: 3,  # motorcycle
    16: 5,  # on-rails → other-vehicle
    18: 4,  # truck
    20: 5,  # other-vehicle
    30: 6,  # person
    31: 7,  # bicyclist
    32: 8,  # motorcyclist
    40: 9,  # road
    44: 10,  # parking
    48: 11,  # sidewalk
    49: 12,  # other-ground
    50: 13,  # building
    51: 14,  # fence
    52: 0,  # other-structure
    60: 9,  # lane-marking → road
    70: 15,  # vegetation
    71: 16,  # trunk
    72: 17,  # terrain
    80: 18,  # pole
    81: 19,  # traffic-sign
    99: 0,  # other-object
    252: 1,  # moving-car → car
    253: 7,  # moving-bicyclist → bicyclist
    254: 6,  # moving-person → person
    255: 8,  # moving-motorcyclist → motorcyclist
    256: 5,  # moving-on-rails → other-vehicle
    257: 5,  # moving-bus → other-vehicle
    258: 4,  # moving-truck → truck
    259: 5,  # moving-other-vehicle → other-vehicle
}

#: the official sequence split (sequences 11–21 have no labels)
TRAIN_SEQUENCES: tuple[str, ...] = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
VALID_SEQUENCES: tuple[str, ...] = ("08",)
TEST_SEQUENCES: tuple[str, ...] = tuple(f"{i:02d}" for i in range(11, 22))


@lru_cache(maxsize=1)
def _lookup() -> np.ndarray:
    """``[65536]`` int64: raw semantic id → ppkt class id, −1 for ids the map does not know."""
    table = np.full(1 << 16, -1, dtype=np.int64)
    for raw, cls in LEARNING_MAP.items():
        table[raw] = cls
    return table


def map_labels(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [N] int64, unknown [N] bool)`` of raw ``.label`` entries (uint32: lower 16 bits the
    semantic id, upper 16 the instance): the learning map applied; ids it does not know become 0 and are
    flagged in ``unknown`` (a garbled file; the reader reports them)."""
    mapped = _lookup()[np.asarray(raw).astype(np.int64) & 0xFFFF]
    unknown = mapped < 0
    return np.where(unknown, 0, mapped), unknown


def one_percent(scans: Iterable[tuple[str, str]], step: int = 100) -> list[tuple[str, str]]:
    """The 1 % training split of the SLidR lineage: of the ``(sequence, scan)`` names of the training
    sequences (:data:`TRAIN_SEQUENCES`; others are ignored), sorted like their paths
    ``sequences/NN/velodyne/NNNNNN.bin``, every ``step``-th one starting with the first (SLidR:
    ``sorted(files)[::100]``)."""
    train = sorted((seq, name) for seq, name in scans if seq in TRAIN_SEQUENCES)
    return train[::step]
