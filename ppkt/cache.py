"""Where ppkt keeps derived data (rendered datasets, fused scenes, teacher features), and how.

Every derived artefact lives in a folder named by a hash of its **recipe** — a JSON-compatible dict of
everything it depends on (versions, parameters, file fingerprints)::

    <cache root>/<kind>-<sha1 of the recipe, 12 hex digits>/

A :class:`CacheFolder` holds either one **whole artefact** published once, complete (the synthetic dataset:
:meth:`CacheFolder.ensure`), or **items** published one by one (a fused scene per file, a teacher feature map
per frame: :meth:`CacheFolder.load_or_make`, :meth:`CacheFolder.store`), optionally with a ``recipe.json``
(:meth:`CacheFolder.ensure_recipe_file`).

Rules, so that any number of processes (parallel runs, DDP ranks, data-loader workers) can share a cache:

* **Atomic publish.** Everything is written into a private hidden path beside its target (same folder, so
  the same file system: ``.<name>.tmp-<pid>-<random>``) and only then moved into place with one
  ``rename``/``link``: a reader sees a complete artefact or none, never a partial one. A failed or
  interrupted write removes its private path (a killed process can leave one behind; nothing reads it).
* **Publish once.** What another process has published for the same recipe is never deleted or rewritten:
  a whole artefact is moved into place with ``rename``, which fails when the target already exists, and
  the loser discards its own copy and uses the published one; a recipe file is published with ``link``
  (same outcome). An item is replaced (``os.replace``) only when the published one does not load for the
  current recipe (another stored recipe or file fingerprint, a truncated or foreign file); that check and
  the replacement run under the folder's publishing lock ``<root>/.lock``, held for that moment only.
* **One builder.** Building takes an advisory lock (``fcntl.flock`` on a hidden, never deleted lock file:
  ``.<kind>-<hash>.lock`` beside a whole artefact, ``.<item>.lock`` beside an item made by
  :meth:`CacheFolder.load_or_make`) and looks again once it holds it: a second process waits for the
  first's render and then loads it instead of rendering twice. (Teacher features are computed in batches
  outside the cache: two runs filling one cache at once may both compute a frame; the second copy is
  discarded.) Whole artefacts do not rely on locks for correctness (publish-once), so on a file system
  without ``flock`` (the lock then does nothing) a published dataset is still never replaced.
* **Stale recipes are never reused.** A whole artefact whose folder exists but does not match its recipe
  (corrupt, or written by something else) is a :class:`~ppkt.errors.DataError` naming the folder (it is
  never deleted behind the user's back); an item whose stored recipe does not match is built again; a
  ``recipe.json`` of another recipe is a :class:`~ppkt.errors.DataError`.

This module is the bottom layer of ppkt: it imports nothing from ppkt but :mod:`ppkt.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ppkt.errors import DataError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "CacheFolder",
    "cache_root",
    "file_lock",
    "jsonable",
    "private_path",
    "publish_once",
    "recipe_digest",
    "replace_folder",
    "staged",
]

T = TypeVar("T")

#: ``flock`` errors meaning "this file system does not lock": the lock is then skipped.
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$PPKT_CACHE_DIR``, else ``~/.cache/ppkt``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PPKT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppkt"


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings): how recipes are compared."""
    return json.loads(json.dumps(obj))


def recipe_digest(recipe: Mapping[str, Any], length: int = 12) -> str:
    """The hex SHA-1 (first ``length`` digits) of ``recipe`` as canonical JSON (sorted keys)."""
    return hashlib.sha1(json.dumps(jsonable(recipe), sort_keys=True).encode()).hexdigest()[:length]


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing, never deleted) for the ``with`` block.

    Blocks while another process holds it, after calling ``on_wait()`` (e.g. to say so). The lock belongs
    to this open file: do not nest two locks of one path in one process. Where the file system has no
    ``flock`` (or on Windows) the block runs unlocked."""
    if sys.platform == "win32":  # pragma: no cover - ppkt's caches lock on POSIX only
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_LOCKING:
                raise
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def private_path(target: Path) -> Path:
    """A fresh hidden path beside ``target`` (same folder, hence same file system) for this process."""
    return target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def staged(target: Path, folder: bool = False) -> Iterator[Path]:
    """A private path for ``target`` (an empty folder with ``folder``), removed on leaving the block unless
    it was moved into place (:func:`publish_once`, :func:`replace_folder`, ``os.replace``) — also on error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_path(target)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def publish_once(tmp: Path, target: Path) -> bool:
    """Move the finished ``tmp`` (a file or folder beside ``target``) to ``target`` unless something was
    published there first: then ``tmp`` is deleted and the published one is left alone. Atomic either way;
    returns whether ``tmp`` was published. An empty folder at ``target`` counts as nothing published."""
    if tmp.is_dir():
        try:
            os.rename(tmp, target)  # POSIX: replaces an empty folder, fails on a non-empty one or a file
            return True
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) or not target.exists():
                raise
    else:
        try:
            os.link(tmp, target)  # fails if target exists, unlike rename
            tmp.unlink()
            return True
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system: check, then replace (a narrow race)
            if not target.exists():
                os.replace(tmp, target)
                return True
    _remove(tmp)
    return False


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing the folder there, if any. For an output
    folder the user named, not for a shared cache: ``target`` is missing for a moment, and the old folder is
    deleted even while someone reads it."""
    old = private_path(target)
    try:
        os.rename(target, old)
    except FileNotFoundError:
        os.rename(tmp, target)
        return
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    _remove(old)


class CacheFolder:
    """``<cache root>/<kind>-<hash of key>``: a whole artefact or a folder of items (see the module doc).

    Args:
        kind: prefix of the folder name (``synth``, ``fused``, ``teacher``).
        key: JSON-compatible recipe whose hash names the folder (stored as :attr:`key`, as it reads back
            from JSON). A folder of items may be keyed by part of the recipe when each item stores the
            full one.
        cache_dir: cache root (``None``: ``$PPKT_CACHE_DIR`` or ``~/.cache/ppkt``).
    """

    def __init__(self, kind: str, key: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None):
        self.key: dict[str, Any] = dict(jsonable(key))
        self.root = cache_root(cache_dir) / f"{kind}-{recipe_digest(self.key)}"

    def __repr__(self) -> str:
        return f"CacheFolder({str(self.root)!r})"

    def _lock(
        self, name: str | None, on_wait: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``None``: the lock of the whole artefact, a sibling ``.<kind>-<hash>.lock`` (the folder may not
        exist yet); ``""``: the folder's publishing lock ``<root>/.lock``; else item ``name``'s lock."""
        if name is None:
            return file_lock(self.root.parent / f".{self.root.name}.lock", on_wait)
        return file_lock(self.root / (f".{name}.lock" if name else ".lock"), on_wait)

    # ------------------------------------------------------------------ whole artefacts
    def ensure(
        self,
        matches: Callable[[Path], bool],
        build: Callable[[Path], None],
        *,
        what: str,
        on_build: Callable[[], None] | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> Path:
        """:attr:`root`, built first unless it already holds an artefact for which ``matches(root)``.

        ``build(tmp)`` fills an empty private folder, which is published once (see the module doc) while
        this process holds the folder's lock; a process that finds the lock taken waits (``on_wait()``
        first) and then reuses what the holder published. ``on_build()`` is called before building. A
        folder that exists but does not match is a :class:`DataError` asking to delete it, as is a build
        that does not match afterwards (``what`` names the artefact in messages)."""
        if matches(self.root):
            return self.root
        with self._lock(None, on_wait):
            if matches(self.root):  # published while this process waited for the lock
                return self.root
            if self.root.exists() and not (self.root.is_dir() and not any(self.root.iterdir())):
                raise DataError(
                    f"{self.root}: holds no {what} of this recipe (corrupt, or written by something "
                    "else); delete it to build it again"
                )
            if on_build is not None:
                on_build()
            with staged(self.root, folder=True) as tmp:
                build(tmp)
                publish_once(tmp, self.root)  # loses only to a process that did not take the lock
        if not matches(self.root):
            raise DataError(f"{self.root}: the {what} just built does not match its recipe")
        return self.root

    # ------------------------------------------------------------------ folders of items
    def ensure_recipe_file(self, what: str, name: str = "recipe.json") -> Path:
        """Create :attr:`root` with ``name`` holding :attr:`key` (published once), or check the one there:
        unreadable or another recipe is a :class:`DataError` asking to delete the folder."""
        path = self.root / name
        if not path.is_file():
            with staged(path) as tmp:
                tmp.write_text(json.dumps(self.key, indent=2, sort_keys=True))
                publish_once(tmp, path)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable {what} recipe ({e}); delete {self.root}") from e
        if stored != self.key:
            raise DataError(
                f"{path}: the {what} in {self.root} was written by another recipe; delete the folder"
            )
        return path

    def item(self, name: str) -> Path:
        """The path of item ``name`` (a file name inside :attr:`root`)."""
        return self.root / name

    def load_or_make(
        self,
        name: str,
        load: Callable[[Path], T | None],
        make: Callable[[], T],
        save: Callable[[T, Path], None],
    ) -> T:
        """Item ``name``: ``load(path)`` if that gives a value (``None``: missing, unreadable or made from
        another recipe), else ``make()``, written with ``save(value, tmp)`` and published by :meth:`store`.

        Making runs under the item's own lock (``.<name>.lock``) and the item is loaded again once it is
        held: a process waits for another one making the same item, then loads it, instead of making it
        twice."""
        path = self.item(name)
        found = load(path)
        if found is not None:
            return found
        with self._lock(name):
            found = load(path)
            if found is not None:
                return found
            value = make()
            self.store(name, lambda tmp: save(value, tmp), lambda p: load(p) is not None)
        return value

    def store(self, name: str, save: Callable[[Path], None], valid: Callable[[Path], bool]) -> bool:
        """Publish item ``name`` written by ``save(tmp)`` unless a ``valid`` one is there already: then that
        one is kept and this one discarded. Returns whether this one was published. An invalid one (missing,
        unreadable, made from another recipe) is replaced atomically (``os.replace``).

        The check and the replacement run under the folder's publishing lock (``<root>/.lock``, held for
        that moment only), so a valid item another process published is never replaced."""
        path = self.item(name)
        self.root.mkdir(parents=True, exist_ok=True)
        with staged(path) as tmp:
            save(tmp)
            with self._lock(""):
                if valid(path):
                    return False
                os.replace(tmp, path)
        return True
