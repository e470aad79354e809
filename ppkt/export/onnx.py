"""The student's forward as an ONNX graph (inference), with a dynamic number of voxels.

Kernel maps are built **outside** the graph (hashing, sorting and ``searchsorted`` have no ONNX
equivalent that exporters handle well) and enter it as *neighbour tables*: for each convolution level
an int64 ``[M_out, K]`` tensor whose entry ``(o, f)`` is the input row at kernel offset ``f`` of output
row ``o``, or ``M_in`` when there is none (a zero row is appended to the features). Each conv is then
``sum_f cat([feats, 0])[table[:, f]] @ W_f.T`` (Gather, MatMul, Add), BatchNorm is its eval-mode affine
map, and the graph only has static loops (over kernel offsets and blocks): every shape is dynamic in the
number of voxels. The tables are the ppkt kernel maps (:mod:`ppkt.sparse.kernel_map`) rewritten:
:func:`neighbour_tables` builds them from the voxel coordinates, in the order of :attr:`OnnxStudent.inputs`.

One table per level: ``subm{s}k{k}`` (submanifold, stride ``s``, kernel ``k``), ``down{s}`` (stride ``s``
to ``2s``) and ``up{s}`` (stride ``2s`` back to ``s``). The output rows are the input rows, in order.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.models.student import BasicBlock, ConvBNReLU, SparseUNet
from ppkt.sparse import KernelMap, SparseConvModule, SparseTensor


def neighbour_table(kmap: KernelMap) -> Tensor:
    """``[n_out, K]`` int64: the input row of output ``o`` at offset ``f``, ``n_in`` where there is none.
    (Each (output, offset) pair has at most one input in the submanifold, down and up maps.)"""
    k3 = kmap.kernel_size**3
    device = kmap.in_idx[0].device
    table = torch.full((kmap.n_out, k3), kmap.n_in, dtype=torch.int64, device=device)
    if kmap.identity is not None:
        table[:, kmap.identity] = torch.arange(kmap.n_out, device=device)
    for f, (in_f, out_f) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
        if f != kmap.identity and in_f.numel():
            table[out_f, f] = in_f
    return table


def table_names(student: SparseUNet) -> list[str]:
    """The neighbour tables the graph of ``student`` takes, in input order."""
    k = student.stem.conv.kernel_size
    names = [f"subm1k{k}"] if k > 1 else []
    for level in range(4):
        s = 2**level
        names += [f"down{s}", f"subm{2 * s}k3", f"up{s}"]
    if "subm1k3" not in names:
        names.append("subm1k3")
    return names


def neighbour_tables(student: SparseUNet, coords: Tensor) -> list[Tensor]:
    """The tables of :func:`table_names` for voxels ``coords`` ``[M, 4]`` ``(batch, x, y, z)``."""
    cache = SparseTensor(torch.zeros(coords.shape[0], 1, device=coords.device), coords).cache
    out = []
    for name in table_names(student):
        if name.startswith("subm"):
            s, k = (int(v) for v in name[4:].split("k"))
            out.append(neighbour_table(cache.submanifold(s, k)))
        elif name.startswith("down"):
            out.append(neighbour_table(cache.downsample(int(name[4:]), 2, 2, 0)))
        else:
            kmap, _ = cache.upsample(2 * int(name[2:]), 2, 2, 0)
            out.append(neighbour_table(kmap))
    return out


def _conv(conv: SparseConvModule, feats: Tensor, table: Tensor | None) -> Tensor:
    cout, cin = conv.out_channels, conv.in_channels
    w = conv.weight.reshape(cout, -1, cin)
    if table is None:
        y = feats @ w[:, 0].t()
    else:
        padded = torch.cat([feats, feats.new_zeros(1, cin)])
        y = padded[table[:, 0]] @ w[:, 0].t()
        for f in range(1, w.shape[1]):
            y = y + padded[table[:, f]] @ w[:, f].t()
    return y if conv.bias is None else y + conv.bias


def _bn(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    assert bn.running_mean is not None and bn.running_var is not None
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class OnnxStudent(nn.Module):
    """``forward(feats [M, C_in], *tables) -> [M, C_out]``: ``student``'s inference forward (eval mode)
    on neighbour tables (:func:`neighbour_tables`); the same function as ``student.eval()(x)``."""

    def __init__(self, student: SparseUNet) -> None:
        super().__init__()
        self.student = student
        self.inputs = table_names(student)
        self.eval()

    def _cbr(self, m: nn.Module, x: Tensor, table: Tensor | None) -> Tensor:
        assert isinstance(m, ConvBNReLU)
        return F.relu(_bn(m.bn, _conv(m.conv, x, table)))

    def _block(self, b: nn.Module, x: Tensor, table: Tensor) -> Tensor:
        assert isinstance(b, BasicBlock)
        out = F.relu(_bn(b.bn1, _conv(b.conv1, x, table)))
        out = _bn(b.bn2, _conv(b.conv2, out, table))
        residual = x
        if b.downsample is not None:
            conv, bn = b.downsample[0], b.downsample[1]
            assert isinstance(conv, SparseConvModule) and isinstance(bn, nn.BatchNorm1d)
            residual = _bn(bn, _conv(conv, x, None))
        return F.relu(out + residual)

    def forward(self, feats: Tensor, *tables: Tensor) -> Tensor:
        t = dict(zip(self.inputs, tables))
        net = self.student
        k = net.stem.conv.kernel_size
        y = self._cbr(net.stem, feats, t[f"subm1k{k}"] if k > 1 else None)
        if net.stem2 is not None:
            y = self._cbr(net.stem2, y, t[f"subm1k{k}"] if k > 1 else None)
        skips = [y]
        for level, (down, enc) in enumerate(zip(net.down, net.enc)):
            s = 2**level
            y = self._cbr(down, y, t[f"down{s}"])
            for block in enc.children():
                y = self._block(block, y, t[f"subm{2 * s}k3"])
            skips.append(y)
        skips.pop()
        for j, (up, dec) in enumerate(zip(net.up, net.dec)):
            s = 2 ** (3 - j)
            y = torch.cat([self._cbr(up, y, t[f"up{s}"]), skips.pop()], dim=1)
            for block in dec.children():
                y = self._block(block, y, t[f"subm{s}k3"])
        if net.head is not None:
            y = _conv(net.head, y, None)
        return y


def export_onnx(student: SparseUNet, coords: Tensor, path: str | Path, opset: int = 17) -> list[str]:
    """Write ``student``'s inference graph to ``path`` (example voxels ``coords``: any cloud, the number of
    voxels is dynamic); returns its input names (``feats``, then the tables)."""
    was_training = student.training
    model = OnnxStudent(student)
    tables = neighbour_tables(student, coords)
    feats = torch.zeros(coords.shape[0], student.in_channels)
    names = ["feats", *model.inputs]
    dynamic = {"feats": {0: "voxels"}, "out": {0: "voxels"}}
    for name in model.inputs:
        dynamic[name] = {0: f"rows_{name}"}
    try:
        torch.onnx.export(
            model,
            (feats, *tables),
            str(path),
            input_names=names,
            output_names=["out"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter: dynamic_axes, no onnxscript needed
        )
    finally:
        student.train(was_training)
    return names
