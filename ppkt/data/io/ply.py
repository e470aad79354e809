"""A minimal PLY reader/writer (binary or ASCII vertex elements): ScanNet meshes and label files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ppkt.errors import DataError

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


class _PlyElement:
    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        self.props: list[tuple[str, str]] = []  # (name, numpy type code)
        self.has_list = False


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
    """``(format, elements, offset of the body)``; raises :class:`DataError` on a malformed header."""
    if not data.startswith(b"ply"):
        raise DataError(f"{path}: malformed PLY (file does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise DataError(f"{path}: malformed PLY (no 'end_header' line)")
    body = data.find(b"\n", end)
    if body < 0:
        raise DataError(f"{path}: malformed PLY (nothing after 'end_header')")
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: malformed PLY (header is not ASCII: {e})") from e
    fmt: str | None = None
    elements: list[_PlyElement] = []
    for lineno, line in enumerate(lines[1:], start=2):
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        bad = f"{path}: malformed PLY header line {lineno} {line.strip()!r}"
        if tok[0] == "format":
            if len(tok) != 3 or tok[1] not in _PLY_FORMATS:
                raise DataError(f"{bad}: expected 'format ascii|binary_little_endian|binary_big_endian 1.0'")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise DataError(f"{bad}: expected 'element <name> <count>'")
            elements.append(_PlyElement(tok[1], int(tok[2])))
        elif tok[0] == "property":
            if not elements:
                raise DataError(f"{bad}: property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise DataError(f"{bad}: unknown property type")
                elements[-1].has_list = True
                elements[-1].props.append((tok[4], "list"))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1].props.append((tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise DataError(
                    f"{bad}: expected 'property <type> <name>' with a type of {sorted(_PLY_TYPES)}"
                )
        else:
            raise DataError(f"{bad}: unknown keyword {tok[0]!r}")
    if fmt is None:
        raise DataError(f"{path}: malformed PLY (no 'format' line in the header)")
    return fmt, elements, body + 1


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """The per-vertex properties of a PLY file (``ascii`` or binary), by name; other elements are ignored.

    Raises :class:`DataError` naming the file on a missing file, a malformed header, a vertex element with
    list properties, an element before the vertices that cannot be skipped, or truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing PLY file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable PLY file ({e})") from e
    fmt, elements, offset = _parse_ply_header(path, data)
    index = next((i for i, el in enumerate(elements) if el.name == "vertex"), None)
    if index is None:
        raise DataError(f"{path}: malformed PLY (no 'element vertex' in the header)")
    vertex = elements[index]
    if vertex.has_list:
        raise DataError(f"{path}: unsupported PLY (the vertex element has list properties)")
    if any(el.has_list for el in elements[:index]):
        raise DataError(f"{path}: unsupported PLY (an element with list properties precedes the vertices)")
    names = [name for name, _ in vertex.props]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: malformed PLY (repeated vertex property names {names})")
    if fmt == "ascii":
        return _read_ascii_vertices(path, data[offset:], elements[:index], vertex)
    order = _PLY_FORMATS[fmt]
    for el in elements[:index]:
        offset += el.count * np.dtype([(n, order + t) for n, t in el.props]).itemsize
    dtype = np.dtype([(n, order + t) for n, t in vertex.props])
    if len(data) < offset + vertex.count * dtype.itemsize:
        raise DataError(
            f"{path}: truncated PLY ({len(data)} bytes, the header promises {vertex.count} vertices of "
            f"{dtype.itemsize} bytes from byte {offset})"
        )
    table = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
    return {n: table[n].astype(table.dtype[n].newbyteorder("=")) for n in names}


def _read_ascii_vertices(
    path: Path, body: bytes, before: list[_PlyElement], vertex: _PlyElement
) -> dict[str, np.ndarray]:
    lines = body.decode("ascii", errors="replace").splitlines()
    skip = 0
    for el in before:
        skip += el.count
    rows = lines[skip : skip + vertex.count]
    if len(rows) < vertex.count:
        raise DataError(f"{path}: truncated PLY (expected {vertex.count} vertex lines, found {len(rows)})")
    n_props = len(vertex.props)
    values = np.empty((vertex.count, n_props), dtype=np.float64)
    for i, row in enumerate(rows):
        tok = row.split()
        if len(tok) != n_props:
            raise DataError(f"{path}: malformed PLY vertex {i} {row!r}: expected {n_props} values")
        try:
            values[i] = [float(t) for t in tok]
        except ValueError as e:
            raise DataError(f"{path}: malformed PLY vertex {i} {row!r}: {e}") from e
    return {name: values[:, j].astype(t) for j, (name, t) in enumerate(vertex.props)}


def write_ply(
    path: str | Path,
    vertices: dict[str, np.ndarray],
    faces: np.ndarray | None = None,
    fmt: Literal["binary_little_endian", "ascii"] = "binary_little_endian",
) -> Path:
    """Write a PLY file: one ``element vertex`` with a property per entry of ``vertices`` (arrays of equal
    length; the numpy dtype gives the PLY type) and optional triangle ``faces`` ``[F, 3]``."""
    path = Path(path)
    type_names = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint"}
    type_names |= {"f4": "float", "f8": "double"}
    cols = {n: np.asarray(a) for n, a in vertices.items()}
    counts = {a.shape[0] for a in cols.values()}
    if len(counts) != 1:
        raise ValueError(f"write_ply: vertex properties have different lengths {counts}")
    n = counts.pop()
    header = ["ply", f"format {fmt} 1.0", f"element vertex {n}"]
    for name, a in cols.items():
        code = a.dtype.str[1:]
        if code not in type_names:
            raise ValueError(f"write_ply: unsupported dtype {a.dtype} of property {name!r}")
        header.append(f"property {type_names[code]} {name}")
    tri = np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces, dtype=np.int32).reshape(-1, 3)
    header += [f"element face {tri.shape[0]}", "property list uchar int vertex_indices", "end_header"]
    out = ("\n".join(header) + "\n").encode("ascii")
    if fmt == "ascii":
        lines = [" ".join(str(cols[name][i]) for name in cols) for i in range(n)]
        lines += [f"3 {a} {b} {c}" for a, b, c in tri.tolist()]
        out += ("\n".join(lines) + "\n").encode("ascii")
    else:
        table = np.empty(n, dtype=[(name, "<" + a.dtype.str[1:]) for name, a in cols.items()])
        for name, a in cols.items():
            table[name] = a
        face_table = np.empty(tri.shape[0], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        face_table["n"], face_table["idx"] = 3, tri
        out += table.tobytes() + face_table.tobytes()
    path.write_bytes(out)
    return path
