"""The driving benchmarks' protocols as data in code: label maps, official splits and the 1 % training
splits of the SLidR lineage (:mod:`~ppkt.data.protocols.semantickitti`, :mod:`~ppkt.data.protocols.nuscenes`).

Readers apply the label maps (a :class:`~ppkt.data.types.Scan`'s ``label`` is already the benchmark class
id + 1); the split functions take scene / scan names, so they work on any listing::

    from ppkt.data.protocols import nuscenes, semantickitti
    from ppkt.data.readers import open_scans

    seqs = open_scans("SemanticKITTI/dataset", "semantickitti")
    keep = semantickitti.one_percent((s.scene, f) for s in seqs for f in s.frames)  # [(seq, scan), ...]
    scenes = open_scans("nuscenes", "nuscenes")
    keep_scenes = nuscenes.one_percent(s.scene for s in scenes)  # 7 scene names, all their keyframes
"""

from ppkt.data.protocols import nuscenes, semantickitti

__all__ = ["nuscenes", "semantickitti"]
