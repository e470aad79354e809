"""The recipe cache (:mod:`ppkt.cache`): naming, atomic publish-once, recipe checks, locks; and two
processes sharing one empty cache (synthetic dataset, fused scenes, teacher features) undisturbed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ppkt.cache import (
    CacheFolder,
    cache_root,
    file_lock,
    jsonable,
    private_path,
    publish_once,
    recipe_digest,
    replace_folder,
    staged,
)
from ppkt.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"version": 1, "size": (30, 40), "name": "tiny"}


def hidden_leftovers(root: Path) -> list[str]:
    """Private write paths (``.<name>.tmp-…``) left anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name)


def test_recipe_names_the_folder(tmp_path: Path) -> None:
    a = CacheFolder("synth", RECIPE, tmp_path)
    b = CacheFolder("synth", {"name": "tiny", "size": [30, 40], "version": 1}, tmp_path)
    c = CacheFolder("synth", {**RECIPE, "version": 2}, tmp_path)
    assert a.root == b.root != c.root and a.root.parent == tmp_path
    assert a.key == jsonable(RECIPE) == {"version": 1, "size": [30, 40], "name": "tiny"}
    # the digest every ppkt cache used before this module: existing caches keep their folders
    legacy = hashlib.sha1(json.dumps(RECIPE, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert a.root.name == f"synth-{legacy}" == f"synth-{recipe_digest(RECIPE)}"
    assert CacheFolder("fused", RECIPE, tmp_path).root.name == f"fused-{legacy}"
    assert not a.root.exists()  # naming creates nothing


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPKT_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root(None) == cache_root("") == tmp_path / "env"
    monkeypatch.delenv("PPKT_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "ppkt"


def test_publish_once_keeps_the_first(tmp_path: Path) -> None:
    target = tmp_path / "item.bin"
    for content, published in ((b"first", True), (b"second", False)):
        with staged(target) as tmp:
            tmp.write_bytes(content)
            assert publish_once(tmp, target) is published
    assert target.read_bytes() == b"first"
    folder = tmp_path / "dataset"
    folder.mkdir()  # an empty folder counts as nothing published
    for content, published in (("first", True), ("second", False)):
        with staged(folder, folder=True) as tmp:
            (tmp / "a.txt").write_text(content)
            assert publish_once(tmp, folder) is published
    assert (folder / "a.txt").read_text() == "first"
    assert hidden_leftovers(tmp_path) == []


def test_replace_folder_is_for_named_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for content in ("old", "new"):
        with staged(out, folder=True) as tmp:
            (tmp / "a.txt").write_text(content)
            replace_folder(tmp, out)
    assert (out / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_nothing_visible(tmp_path: Path) -> None:
    cache = CacheFolder("items", RECIPE, tmp_path)
    target = cache.item("a.bin")

    def half_written(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        assert tmp.parent == target.parent and tmp.name.startswith(".a.bin.tmp-")
        assert not target.exists()  # the private path is all there is while writing
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        cache.store("a.bin", half_written, lambda p: p.is_file())
    assert not target.exists() and hidden_leftovers(tmp_path) == []

    def half_built(tmp: Path) -> None:
        (tmp / "part.txt").write_text("half")
        raise RuntimeError("killed mid-build")

    whole = CacheFolder("whole", RECIPE, tmp_path)
    with pytest.raises(RuntimeError, match="mid-build"):
        whole.ensure(lambda root: (root / "done").is_file(), half_built, what="test artefact")
    assert not whole.root.exists() and hidden_leftovers(tmp_path) == []
    assert private_path(target) != private_path(target)  # fresh per call, so writers never share one


def test_ensure_builds_once_and_never_replaces(tmp_path: Path) -> None:
    cache = CacheFolder("whole", RECIPE, tmp_path)
    built: list[Path] = []

    def matches(root: Path) -> bool:
        f = root / "recipe.json"
        return f.is_file() and json.loads(f.read_text()) == cache.key

    def build(tmp: Path) -> None:
        built.append(tmp)
        (tmp / "data.txt").write_text("payload")
        (tmp / "recipe.json").write_text(json.dumps(cache.key))

    announced: list[str] = []
    root = cache.ensure(matches, build, what="test artefact", on_build=lambda: announced.append("build"))
    assert root == cache.root and (root / "data.txt").read_text() == "payload"
    assert announced == ["build"] and built[0].parent == root.parent and not built[0].exists()
    stamp = (root / "data.txt").stat().st_mtime_ns
    assert cache.ensure(matches, build, what="test artefact") == root and len(built) == 1
    assert (root / "data.txt").stat().st_mtime_ns == stamp

    # a folder that exists but holds something else is an error naming it; it is left as it is
    (root / "recipe.json").write_text("{}")
    with pytest.raises(DataError, match=r"whole-.*holds no test artefact of this recipe.*delete it"):
        cache.ensure(matches, build, what="test artefact")
    assert (root / "data.txt").read_text() == "payload" and len(built) == 1
    # a build that does not give a matching artefact is an error too
    other = CacheFolder("whole", {"other": 1}, tmp_path)
    with pytest.raises(DataError, match="just built does not match"):
        other.ensure(lambda r: False, lambda tmp: None, what="test artefact")


def test_ensure_from_threads_builds_once(tmp_path: Path) -> None:
    """flock locks belong to an open file, so threads of one process exclude each other like processes."""
    cache = CacheFolder("whole", RECIPE, tmp_path)
    calls, waits = [], []

    def build(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (tmp / "done").write_text("x")

    def run() -> None:
        cache.ensure(
            lambda r: (r / "done").is_file(), build, what="test artefact", on_wait=lambda: waits.append(1)
        )

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(waits) >= 1 and (cache.root / "done").is_file()


def test_file_lock_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".x.lock"
    order: list[str] = []
    waiting = threading.Event()

    def second() -> None:
        with file_lock(lock, on_wait=waiting.set):
            order.append("second")

    with file_lock(lock):
        t = threading.Thread(target=second)
        t.start()
        assert waiting.wait(10)
        order.append("first")
    t.join()
    assert order == ["first", "second"] and lock.is_file()


def test_items_load_make_and_replace_only_invalid(tmp_path: Path) -> None:
    cache = CacheFolder("items", RECIPE, tmp_path)
    made: list[str] = []

    def load(path: Path) -> str | None:
        try:
            value, recipe = path.read_text().split("|")
        except (OSError, ValueError):
            return None  # missing or corrupt
        return value if recipe == "r1" else None  # another recipe: stale

    def make() -> str:
        made.append("x")
        return f"value{len(made)}"

    def save(value: str, tmp: Path) -> None:
        tmp.write_text(f"{value}|r1")

    path = cache.item("a.txt")
    assert cache.load_or_make("a.txt", load, make, save) == "value1" and path.read_text() == "value1|r1"
    before = path.stat().st_ino, path.stat().st_mtime_ns
    assert cache.load_or_make("a.txt", load, make, save) == "value1" and len(made) == 1
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == before  # reused, not rewritten
    # a valid item is kept by store (this one is discarded); an invalid one is replaced
    assert not cache.store("a.txt", lambda tmp: save("other", tmp), lambda p: load(p) is not None)
    assert path.read_text() == "value1|r1" and (path.stat().st_ino, path.stat().st_mtime_ns) == before
    for broken in ("value1|r0", "garbage"):  # stale recipe, corrupt file
        path.write_text(broken)
        value = cache.load_or_make("a.txt", load, make, save)
        assert value == f"value{len(made)}" and path.read_text() == f"{value}|r1"
    assert len(made) == 3 and hidden_leftovers(tmp_path) == []


def test_recipe_file_is_written_once_and_checked(tmp_path: Path) -> None:
    cache = CacheFolder("teacher", RECIPE, tmp_path)
    f = cache.ensure_recipe_file("test cache")
    assert json.loads(f.read_text()) == cache.key
    stamp = f.stat().st_mtime_ns
    assert cache.ensure_recipe_file("test cache") == f and f.stat().st_mtime_ns == stamp
    f.write_text(json.dumps({**cache.key, "version": 9}))
    with pytest.raises(
        DataError, match=r"the test cache in .* was written by another recipe; delete the folder"
    ):
        cache.ensure_recipe_file("test cache")
    f.write_text("{not json")
    with pytest.raises(DataError, match=r"unreadable test cache recipe .*; delete"):
        cache.ensure_recipe_file("test cache")


# ---------------------------------------------------------------------------- two processes, one cache

#: One run: the embedded dataset, its fused scene and (fake) teacher features of its frames, all through
#: the cache; then, once the other run has done the same, everything is checked to be still there and
#: unchanged, and a summary (digests of files and arrays) is printed for the two runs to be compared.
WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

from ppkt.data.embedded import ensure_synthetic
from ppkt.data.fusion import load_or_fuse_all
from ppkt.data.readers import open_scenes
from ppkt.data.teacher_cache import FeatureCache

cache, sync, me, other = sys.argv[1:5]
root = ensure_synthetic(scenes=1, frames_per_scene=2, seed=5, image_size=(30, 40), cache_dir=cache,
                        verbose=False)
files = sorted(p for p in root.rglob("*") if p.is_file())
stats = {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
scenes = load_or_fuse_all(root, voxel_size=0.1, cache_dir=cache)
features = FeatureCache(FeatureCache.make_recipe("fake", None, ["pool"], [8], [3], (16, 24)), cache)
frames = [(folder, i) for folder in open_scenes(root) for i in range(len(folder))]
for folder, i in frames:
    frame = folder.read(i)
    image = torch.from_numpy(frame.color).permute(2, 0, 1)[None].float() / 255
    features.store(folder, i, [F.adaptive_avg_pool2d(image, (2, 3))], frame.shape)
Path(sync, me).touch()
deadline = time.time() + 300
while not Path(sync, other).exists():
    assert time.time() < deadline, "the other run never got this far"
    time.sleep(0.05)
# the other run has rendered, fused and cached too: nothing this run used was replaced
now = {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}
assert now == stats, "the dataset was rewritten under this run"
loaded = [features.load(folder, i) for folder, i in frames]
assert all(entry is not None for entry in loaded), "a teacher-feature entry went stale"
fused = [f for f in Path(cache).glob("fused-*/*.npz")]
before = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in fused]
again = load_or_fuse_all(root, voxel_size=0.1, cache_dir=cache)
assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in fused] == before, "fused again instead of reused"

def digest(arrays):
    h = hashlib.sha1()
    for a in arrays:
        h.update(a.numpy().tobytes() if hasattr(a, "numpy") else a.tobytes())
    return h.hexdigest()

print(json.dumps({
    "root": str(root),
    "dataset": {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files},
    "fused": digest([x for s in scenes + again for x in (s.xyz, s.rgb, s.label)]),
    "features": digest([m for entry in loaded for m in entry.maps]),
}))
"""


@pytest.mark.parametrize("stagger", [0.0, 0.5, 1.0, 2.0])
def test_two_processes_share_one_empty_cache(tmp_path: Path, stagger: float) -> None:
    cache, sync = tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PPKT_CACHE_DIR", None)
    procs = []
    for me, other in (("a", "b"), ("b", "a")):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(cache), str(sync), me, other],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        if me == "a":
            time.sleep(stagger)
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    a, b = outputs
    assert a == b and len(a["dataset"]) == 1 + 2 + 2 * 5  # dataset.json, intrinsics, scene.json, 5/frame
    # one folder per artefact, one file per item, no private write path left behind
    folders = sorted(p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith("."))
    assert folders == ["fused", "synth", "teacher"]
    assert len(list(cache.glob("fused-*/*.npz"))) == 1 and len(list(cache.glob("teacher-*/*.pt"))) == 2
    assert hidden_leftovers(cache) == []
