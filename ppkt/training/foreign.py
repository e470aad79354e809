"""A segmentation model read from another framework's checkpoint (``ppkt evaluate --ckpt FILE``).

Pointcept (``SpUNet-v1m1`` + ``final``), SLidR / MinkowskiEngine (``Res16UNet34C`` / ``MinkUNet34C`` +
``final``) and mmdet3d (``MinkUNetBackbone`` + ``decode_head.conv_seg``) files carry no ppkt config: the
student preset, input features and data come from the fine-tuning config the user gives, the backbone and
classifier from the file (:mod:`ppkt.export`). A file without a classifier -- a backbone, or a pretraining
projection -- is refused with the commands that turn it into one (fine-tuning or a linear probe).
"""

from __future__ import annotations

from pathlib import Path

from ppkt.config import FinetuneConfig, to_dict
from ppkt.errors import WeightsError
from ppkt.export import ForeignWeights, import_classifier, student_state
from ppkt.training.data import num_input_features
from ppkt.training.seg_module import SegmentationModule


def foreign_segmentation_module(
    path: Path, foreign: ForeignWeights, cfg: FinetuneConfig, num_classes: int, class_names: list[str]
) -> SegmentationModule:
    """``cfg``'s student and a linear head holding the backbone and classifier of ``foreign`` (read from
    ``path``), for data with ``num_classes`` classes (ids ``1..num_classes``)."""
    t = foreign.target
    what = f"{path} ({t.network} weights)"
    name = cfg.student.name
    todo = (
        f"fine-tune it (ppkt finetune --init {path} student.name={name} …) or linear-probe it (ppkt finetune "
        f"--init {path} --probe student.name={name} …), then evaluate that run's checkpoints/last.ckpt"
    )
    n = foreign.num_outputs
    if foreign.projection:
        raise WeightsError(f"{what}: its final layer is a pretraining projection, not a classifier: {todo}")
    if n is None:
        raise WeightsError(f"{what} holds a backbone without a classifier (no final layer): {todo}")
    classes = n - t.ignored_outputs
    if classes != num_classes:
        ignored = (
            f" (its first {t.ignored_outputs} output is the ignored label 0)" if t.ignored_outputs else ""
        )
        raise WeightsError(
            f"{what}: its final layer has {n} outputs{ignored}, so {classes} classes, but the data has "
            f"{num_classes}: a pretraining projection or another dataset's classifier; {todo}"
        )
    in_channels = num_input_features(cfg.data.features)
    module = SegmentationModule(to_dict(cfg), in_channels, num_classes, class_names)
    module.student.load_state_dict(student_state(foreign, module.student, name, what), strict=True)
    head = import_classifier(foreign, module.student.out_channels, what)
    assert head is not None
    module.head.linear.load_state_dict(head, strict=True)
    return module.eval()
