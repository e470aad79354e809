"""File-system helpers shared by every reader: natural sort order, file fingerprints for cache recipes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path


def natural_key(text: str) -> list[int | str]:
    """Sort key ordering embedded numbers numerically (``frame2`` before ``frame10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def not_a_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as the file ``what`` (``"missing depth image"``, a broken symbolic link or
    a symlink loop, a folder), or ``None`` when it is a file (links followed)."""
    if path.is_file():
        return None
    if path.is_symlink():
        return f"{what} is a broken symbolic link or a symlink loop"
    if path.exists():
        return f"{what} is not a regular file"
    return f"missing {what}"


def files_fingerprint(paths: Sequence[Path]) -> str:
    """A hash of the names, sizes and modification times of ``paths`` (missing files count as -1)."""
    h = hashlib.sha1()
    for path in paths:
        st = path.stat() if path.is_file() else None
        h.update(f"{path.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()
