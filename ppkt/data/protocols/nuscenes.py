"""The nuScenes-lidarseg protocol: the 32 lidarseg categories mapped to the 16 benchmark classes, the official
scene splits, and the 1 % training split of the SLidR lineage.

The map is the benchmark's (nuScenes devkit ``lidarseg`` challenge classes, as SLidR's and mmdet3d's
``labels_map``): adult/child/construction-worker/police pedestrians → pedestrian, rigid and bendy buses →
bus, every other category of the 32 (noise, animal, debris, ego vehicle, …) → unlabelled. ppkt's ids: 0 =
unlabelled, 1 … 16 the classes of :data:`CLASS_NAMES`.

The scene splits are nuscenes-devkit's ``utils/splits.py`` (``train``: 700 scenes, ``val``: 150 of
v1.0-trainval; ``mini_train``/``mini_val`` of v1.0-mini), embedded as scene-number ranges.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: lidarseg category index (``category.json`` ``index``, the value stored per point) → name
LIDARSEG_NAMES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)

#: ppkt class id → name (0 = unlabelled)
CLASS_NAMES: tuple[str, ...] = (
    "unlabelled",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)

#: lidarseg category name → ppkt class id (categories not listed → 0 = unlabelled)
LIDARSEG_TO_CLASS: dict[str, int] = {
    "movable_object.barrier": 1,
    "vehicle.bicycle": 2,
    "vehicle.bus.bendy": 3,
    "vehicle.bus.rigid": 3,
    "vehicle.car": 4,
    "vehicle.construction": 5,
    "vehicle.motorcycle": 6,
    "human.pedestrian.adult": 7,
    "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7,
    "human.pedestrian.police_officer": 7,
    "movable_object.trafficcone": 8,
    "vehicle.trailer": 9,
    "vehicle.truck": 10,
    "flat.driveable_surface": 11,
    "flat.other": 12,
    "flat.sidewalk": 13,
    "flat.terrain": 14,
    "static.manmade": 15,
    "static.vegetation": 16,
}

#: ``[32]`` int64: lidarseg index → ppkt class id
LIDARSEG_LOOKUP: np.ndarray = np.array([LIDARSEG_TO_CLASS.get(n, 0) for n in LIDARSEG_NAMES], dtype=np.int64)


def map_lidarseg(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [N] int64, unknown [N] bool)`` of a lidarseg ``.bin`` (uint8 category index per point);
    indices beyond the 32 categories become 0 and are flagged (a garbled file; the reader reports them)."""
    idx = np.asarray(raw).astype(np.int64)
    unknown = (idx < 0) | (idx >= len(LIDARSEG_NAMES))
    return np.where(unknown, 0, LIDARSEG_LOOKUP[np.clip(idx, 0, len(LIDARSEG_NAMES) - 1)]), unknown


def _scenes(ranges: str) -> frozenset[str]:
    """Scene names of ``"1-2,4,…"`` number ranges (``scene-0001``, ``scene-0002``, ``scene-0004``, …)."""
    names: set[str] = set()
    for part in ranges.split(","):
        lo, _, hi = part.strip().partition("-")
        names.update(f"scene-{i:04d}" for i in range(int(lo), int(hi or lo) + 1))
    return frozenset(names)


#: nuscenes-devkit ``splits.train``: the 700 training scenes of v1.0-trainval
TRAIN_SCENES: frozenset[str] = _scenes(
    "1-2,4-11,19-34,41-76,120-135,138-139,149-152,154-155,157-168,170-185,187-188,190-196,199-200,202-204,"
    "206-214,218-220,222,224-264,283-306,315-318,321,323-324,328,347-386,388-403,405-408,410-459,461-465,"
    "467-469,471-472,474-480,499-502,504-515,517-518,525-539,541-546,566,568,570-578,580,582-600,639-679,681,"
    "683-689,695-698,700-701,703-719,726-728,730-731,733-741,744,746-747,749-752,757-765,767-769,786-787,"
    "789-792,803-806,808-813,815-817,819-822,847-856,858,860-866,868-873,875-878,880,882-903,945,947,949,"
    "952-953,955-961,975-984,988-992,994-1025,1044-1058,1074-1102,1104-1110"
)
#: nuscenes-devkit ``splits.val``: the 150 validation scenes of v1.0-trainval
VAL_SCENES: frozenset[str] = _scenes(
    "3,12-18,35-36,38-39,92-110,221,268-278,329-332,344-346,519-524,552-565,625-627,629-630,632-638,770-771,"
    "775,777-778,780-784,794-800,802,904-917,919-931,962-963,966-969,971-972,1059-1073"
)
#: nuscenes-devkit ``splits.mini_train`` / ``splits.mini_val`` (v1.0-mini)
MINI_TRAIN_SCENES: frozenset[str] = _scenes("61,553,655,757,796,1077,1094,1100")
MINI_VAL_SCENES: frozenset[str] = _scenes("103,916")


def one_percent(scenes: Iterable[str], step: int = 100, train: frozenset[str] = TRAIN_SCENES) -> list[str]:
    """The 1 % training split of the SLidR lineage: walking the scenes in the order of ``scene.json`` (the
    order :func:`~ppkt.data.readers.nuscenes.open_nuscenes` returns them), the ``step``-th, ``2·step``-th, …
    scene of the ``train`` split (SLidR counts training scenes and keeps one when the count is a multiple
    of 100: 7 of the 700 scenes), each with all its keyframes."""
    kept: list[str] = []
    count = 0
    for name in scenes:
        if name in train:
            count += 1
            if count % step == 0:
                kept.append(name)
    return kept
