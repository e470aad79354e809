"""The 3D student: a residual sparse-conv U-Net, ``SparseTensor [M, C_in] -> Tensor [M, out_channels]``."""

from ppkt.models.student.blocks import BasicBlock, ConvBNReLU, SparseBatchNorm, make_layer, sync_batchnorm
from ppkt.models.student.unet import STUDENT_PRESETS, STUDENTS, SparseUNet, build_student

__all__ = [
    "STUDENTS",
    "STUDENT_PRESETS",
    "BasicBlock",
    "ConvBNReLU",
    "SparseBatchNorm",
    "SparseUNet",
    "build_student",
    "make_layer",
    "sync_batchnorm",
]
