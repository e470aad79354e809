"""ppkt — Contrastive Pixel-to-Point Knowledge Transfer.

Pretrain sparse-conv 3D networks from frozen, already-trained 2D image networks (Liu et al., 2021).
See the README for the layout: ``geometry`` (camera maths), ``data`` (readers, synthetic scenes, the one
batch format), ``sparse`` (pure-PyTorch sparse convolution), ``models`` (teachers, UPL, student, heads),
``losses``, ``training`` (Lightning modules) and ``cli``.
"""

__version__ = "0.1.0"
