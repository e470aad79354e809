"""Config loading: defaults file ≡ dataclass, overrides, unknown keys and bad values rejected."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from ppkt.config import FinetuneConfig, PretrainConfig, dump_config, from_dict, load_config, to_dict
from ppkt.config.demo import DemoConfig
from ppkt.errors import ConfigError

from .conftest import REPO, assert_mentions


def _keys(tree: dict, prefix: str = "") -> set[str]:
    """Every dotted key of a YAML mapping, sections included."""
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


#: every configurable command's dataclass
CONFIGS: dict[str, type] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "demo": DemoConfig}


def _fields(cls: type, prefix: str = "") -> set[str]:
    """Every dotted key of a config dataclass, sections (nested dataclasses) included."""
    out = set()
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.add(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _fields(hints[f.name], prefix + f.name + ".")
    return out


def _documented_yaml() -> list[tuple[str, str]]:
    """``(where, text)`` of every YAML config the project shows: configs/*.yaml and the README's blocks."""
    out = [(f"configs/{p.name}", p.read_text()) for p in sorted((REPO / "configs").glob("*.yaml"))]
    readme = (REPO / "README.md").read_text()
    blocks = re.finditer(r"^```yaml\n(.*?)^```", readme, re.S | re.M)
    for i, m in enumerate(blocks, 1):
        out.append((f"README.md yaml block {i} (line {readme.count(chr(10), 0, m.start()) + 1})", m.group(1)))
    return out


DOCUMENTED_YAML = _documented_yaml()


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_default_file_documents_every_field_with_its_default(name: str) -> None:
    """configs/<command>.yaml holds every field of the command's dataclass (no more), each key with a
    comment, at exactly the dataclass's defaults."""
    cls, path = CONFIGS[name], REPO / "configs" / f"{name}.yaml"
    assert to_dict(load_config(cls, path)) == to_dict(cls())
    documented = _keys(yaml.safe_load(path.read_text()))
    assert sorted(_fields(cls) - documented) == [], f"{path.name}: config fields not documented"
    assert sorted(documented - _fields(cls)) == [], f"{path.name}: keys that are no config field"
    for line in path.read_text().splitlines():  # every key is commented (sections may be self-explanatory)
        if ":" in line and not line.strip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: undocumented key: {line}"


@pytest.mark.parametrize(
    ("where", "text"), DOCUMENTED_YAML, ids=[w.split(" (")[0] for w, _ in DOCUMENTED_YAML]
)
def test_every_documented_yaml_key_is_a_config_field(where: str, text: str) -> None:
    """Every key of configs/*.yaml and of the README's YAML blocks is a field of one config dataclass, and
    the values are valid for it. The README shows defaults ("every key ..., with its default"), so its
    blocks must equal the dataclass defaults too."""
    tree = yaml.safe_load(text)
    assert isinstance(tree, dict) and tree, f"{where}: not a YAML mapping"
    unknown = {name: sorted(_keys(tree) - _fields(cls)) for name, cls in CONFIGS.items()}
    fits = [name for name, keys in unknown.items() if not keys]
    assert fits, f"{where}: keys that are no config field: {min(unknown.values(), key=len)}"
    loaded = {name: from_dict(CONFIGS[name], tree) for name in fits}  # types and ranges checked
    if where.startswith("README"):
        assert any(cfg == CONFIGS[name]() for name, cfg in loaded.items()), f"{where}: not the defaults"


def test_readme_documents_a_yaml_block_per_default_file() -> None:
    """The README shows configs/pretrain.yaml and configs/finetune.yaml (not necessarily verbatim)."""
    readme = [
        tree for where, t in DOCUMENTED_YAML if where.startswith("README") for tree in [yaml.safe_load(t)]
    ]
    for name in ("pretrain", "finetune"):
        keys = _keys(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))
        assert any(_keys(tree) == keys for tree in readme), f"no README block with every key of {name}.yaml"


def test_keys_named_in_readme_prose_are_config_fields() -> None:
    """Dotted keys in the README's code spans (``data.augment.crop``, ``trainer.devices=4``) and
    ``key: value`` spans (``class_weights: inverse_sqrt``) name existing config fields."""
    fields = set().union(*(_fields(cls) for cls in CONFIGS.values()))
    sections = {k.split(".")[0] for k in fields if "." in k}
    leaves = {k.rsplit(".", 1)[-1] for k in fields}
    readme = (REPO / "README.md").read_text()
    named: list[str] = []
    for span in re.findall(r"`([^`\n]+)`", readme):
        for token in span.split():
            m = re.match(r"\[?([a-z_]+(?:\.[a-z_0-9]+)+)(?:$|[=:\]])", token)
            if m and m.group(1).split(".")[0] in sections:
                named.append(m.group(1))
        m = re.fullmatch(r"([a-z_]+): ([^:]+)", span)
        if m:
            assert m.group(1) in leaves, f"README: `{span}`: {m.group(1)!r} is no config field"
    assert len(named) > 20  # the README names many keys; the pattern still finds them
    assert sorted({k for k in named if k not in fields}) == [], "README: keys that are no config field"


def test_demo_config_keys_are_documented() -> None:
    """DemoConfig has no YAML file: its own keys are named in the README, and its sections are the
    pretraining and fine-tuning configs that configs/pretrain.yaml and configs/finetune.yaml document."""
    readme = (REPO / "README.md").read_text()
    hints = get_type_hints(DemoConfig)
    for f in dataclasses.fields(DemoConfig):
        if dataclasses.is_dataclass(hints[f.name]):
            assert hints[f.name] is CONFIGS[f.name], f.name
            assert f"`{f.name}.*`" in readme, f.name
        else:
            assert f"`{f.name}`" in readme, f"README does not name the DemoConfig key {f.name!r}"


def test_overrides_are_typed() -> None:
    cfg = load_config(
        PretrainConfig,
        overrides=["data.voxel_size=0.04", "trainer.devices=2", "data.image_size=[60, 80]", "data.root=/x"],
    )
    assert cfg.data.voxel_size == 0.04 and cfg.trainer.devices == 2
    assert cfg.data.image_size == (60, 80) and cfg.data.root == "/x"
    assert load_config(PretrainConfig, overrides=["data.voxel_size=1"]).data.voxel_size == 1.0


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    """PyYAML reads ``1e-4`` (no dot) as a string; a float key still takes it, on the command line and in
    a file."""
    assert load_config(PretrainConfig, overrides=["optim.lr=1e-4"]).optim.lr == pytest.approx(1e-4)
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 3e-3\n")
    assert load_config(PretrainConfig, f).optim.lr == pytest.approx(3e-3)


# Each bad value is refused with an error that names the stable parts: the full key, the value it got and
# the allowed range or choices; the sentence around them is free to change.
@pytest.mark.parametrize(
    ("override", "parts"),
    [
        ("data.vox=1", ["'data.vox'", "'voxel_size'"]),  # the unknown key and the valid ones
        ("nope=1", ["'nope'", "'data'"]),
        ("upl.output_stride=3", ["'upl.output_stride'", "3", "[1, 2, 4, 8]"]),
        ("data.voxel_size=abc", ["'data.voxel_size'", "'abc'"]),
        ("data.image_size=[1]", ["'data.image_size'", "[1]", "2"]),
        ("data.heldout=1.5", ["'data.heldout'", "1.5"]),
        ("data.augment.color_jitter.gray=2", ["'data.augment.color_jitter.gray'", "2.0", "[0, 1]"]),
        ("data.voxel_size.x=1", ["'data.voxel_size.x'", "'data.voxel_size'", "section"]),
        ("novalue", ["'novalue'", "key=value"]),
    ],
)
def test_bad_overrides(override: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, overrides=[override])
    assert_mentions(err.value, *parts)


@pytest.mark.parametrize(
    ("override", "parts"),
    [
        ("optim.lr=-1", ["'optim.lr'", "-1.0", "> 0"]),
        ("optim.lr=.nan", ["'optim.lr'", "nan"]),
        ("optim.weight_decay=-1", ["'optim.weight_decay'", "-1.0", ">= 0"]),
        ("optim.momentum=1", ["'optim.momentum'", "1.0", "[0, 1)"]),
        ("optim.warmup_steps=-5", ["'optim.warmup_steps'", "-5", ">= 0"]),
        ("trainer.max_epochs=0", ["'trainer.max_epochs'", "0", ">= 1"]),
        ("trainer.max_steps=0", ["'trainer.max_steps'", "0", ">= 1", "-1"]),
        ("trainer.batch_size=0", ["'trainer.batch_size'", "0", ">= 1"]),
        ("trainer.threads=-1", ["'trainer.threads'", "-1", ">= 1"]),
        ("trainer.precision=foo", ["'trainer.precision'", "'foo'", "'auto'", "'32-true'"]),
        ("trainer.accelerator=foo", ["'trainer.accelerator'", "'foo'", "'cpu'"]),
        ("trainer.devices=0", ["'trainer.devices'", "0", ">= 1", "'auto'"]),
        ("data.num_workers=-1", ["'data.num_workers'", "-1", ">= 0"]),
        (
            "data.features=[foo]",
            ["'data.features'", "['foo']", "['rgb', 'ones', 'height', 'intensity', 'elevation']"],
        ),
        ("data.features=[]", ["'data.features'", "[]"]),
        ("data.features=[rgb, rgb]", ["'data.features'", "['rgb', 'rgb']", "distinct"]),
        ("data.min_depth=7", ["'data.min_depth'", "'data.max_depth'", "7.0", "6.0"]),
        ("data.augment.scale=[-1, 0]", ["'data.augment.scale'", "[-1.0, 0.0]", "0 < a <= b"]),
        ("data.augment.crop_scale=[0.5, 2]", ["'data.augment.crop_scale'", "[0.5, 2.0]", "<= 1"]),
        ("data.augment.flip=2", ["'data.augment.flip'", "2.0", "[0, 1]"]),
        ("loss.temperature=0", ["'loss.temperature'", "0.0", "> 0"]),
        ("loss.num_pairs=1", ["'loss.num_pairs'", "1", ">= 2"]),
        ("eval.retrieval_points=1", ["'eval.retrieval_points'", "1", ">= 2"]),
        ("teacher.name=foo", ["'teacher.name'", "'foo'", "'efficientnet_lite0'"]),
        ("teacher.layers=[]", ["'teacher.layers'", "efficientnet_lite0", "[]"]),
        ("teacher.layers=[foo]", ["'teacher.layers'", "['foo']", "'stage3'"]),
        ("teacher.layers=[stage7, stage7]", ["'teacher.layers'", "['stage7', 'stage7']", "distinct"]),
        # the default layers are EfficientNet's: another teacher needs its own (or null)
        ("teacher.name=resnet18", ["'teacher.layers'", "resnet18", "'layer1'", "null"]),
        ("student.name=foo", ["'student.name'", "'foo'", "'unet_small'"]),
        ("loss.name=foo", ["'loss.name'", "'foo'", "'ppnce'"]),
    ],
)
def test_out_of_range_values_name_their_key(override: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, overrides=[override])
    assert_mentions(err.value, *parts)
    # all (GPUs: load_config checks the machine, so only the values here) / epochs
    assert from_dict(PretrainConfig, {"trainer": {"devices": -1, "max_steps": -1}})


@pytest.mark.parametrize(
    ("override", "parts"),
    [
        ("optim.head_lr=-1", ["'optim.head_lr'", "-1.0", "> 0"]),
        ("optim.head_only_steps=-1", ["'optim.head_only_steps'", "-1", ">= 0"]),
        ("trainer.max_steps=0", ["'trainer.max_steps'", "0", ">= 1"]),
        ("trainer.val_every_n_steps=-1", ["'trainer.val_every_n_steps'", "-1", ">= 0"]),
        ("data.augment.scale=[-1, 0]", ["'data.augment.scale'", "[-1.0, 0.0]"]),
        ("data.augment.crop=0", ["'data.augment.crop'", "0.0", "> 0"]),
        ("data.fuse_voxel_size=0", ["'data.fuse_voxel_size'", "0.0"]),
        ("data.features=[foo]", ["'data.features'", "['foo']"]),
        ("labels=0", ["'labels'", "0.0", "(0, 1]"]),
    ],
)
def test_finetune_out_of_range_values_name_their_key(override: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(FinetuneConfig, overrides=[override])
    assert_mentions(err.value, *parts)


def test_valid_teacher_choices_and_cache_dirs_pass(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, overrides=["teacher.name=resnet18", "teacher.layers=null"])
    assert cfg.teacher.layers is None
    cfg = load_config(PretrainConfig, overrides=["teacher.layers=[stage3, stage7]", "teacher.name=dinov2"])
    assert cfg.teacher.layers == ["stage3", "stage7"]  # DINOv2 layers depend on its weights: checked at build
    assert load_config(PretrainConfig, overrides=[f"data.cache_dir={tmp_path / 'new'}"])
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for cls in (PretrainConfig, FinetuneConfig):
        with pytest.raises(ConfigError) as err:
            load_config(cls, overrides=[f"data.cache_dir={a_file}"])
        assert_mentions(err.value, "'data.cache_dir'", a_file, "not a folder")


def test_demo_checks_every_section_before_running() -> None:
    """Nested sections name their full dotted key; demo-level values are checked at load time."""
    for override, parts in [
        ("finetune.trainer.max_steps=0", ["'finetune.trainer.max_steps'", "0", ">= 1"]),
        ("pretrain.optim.lr=0", ["'pretrain.optim.lr'", "0.0"]),
        ("probe_labels=2", ["'probe_labels'", "2", "(0, 1]"]),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(DemoConfig, overrides=[override])
        assert_mentions(err.value, *parts)


def test_file_with_unknown_key_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, f)
    assert_mentions(err.value, "'trainer.max_epoch'", "max_epochs")
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, tmp_path / "missing.yaml")
    assert_mentions(err.value, tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, binary)
    assert_mentions(err.value, binary, "UTF-8")


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, overrides=["loss.temperature=0.04", "data.features=[rgb, height]"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(PretrainConfig, tmp_path / "c.yaml") == cfg


def test_cli_overrides_on_both_sides_of_options() -> None:
    from ppkt.cli.main import parse_args

    args = parse_args(["pretrain", "a.b=1", "--out", "/tmp/x", "c=2", "--resume", "last", "d.e=[1, 2]"])
    assert args.overrides == ["a.b=1", "c=2", "d.e=[1, 2]"] and args.out == "/tmp/x" and args.resume == "last"
    with pytest.raises(SystemExit):
        parse_args(["pretrain", "--out", "/tmp/x", "a=1", "--bogus"])
    with pytest.raises(SystemExit):
        parse_args(["export", "--ckpt", "c.ckpt", "--to", "onnx", "--out", "o", "x=1"])  # export takes none
    # evaluate takes them (for Pointcept / SLidR / mmdet3d checkpoints, which carry no ppkt config)
    args = parse_args(["evaluate", "student.name=spunet_v1m1", "--ckpt", "c.pth", "data.root=d"])
    assert args.overrides == ["student.name=spunet_v1m1", "data.root=d"] and args.ckpt == "c.pth"


def test_metrics_files_are_strict_json(tmp_path: Path) -> None:
    """NaN and infinities (an undefined IoU, a ratio over zero) are written as null, never as NaN."""
    import json
    import math

    from ppkt.training.common import write_json

    path = tmp_path / "metrics.json"
    text = write_json(path, {"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": 2, "e": "x"})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "a": None,
        "b": [1.5, None, {"c": None}],
        "d": 2,
        "e": "x",
    }
