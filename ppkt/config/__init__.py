"""Configuration dataclasses (one per command) and the YAML/override loader."""

from ppkt.config.finetune import FinetuneConfig
from ppkt.config.loader import dump_config, from_dict, load_config, parse_overrides, to_dict
from ppkt.config.pretrain import PretrainConfig

__all__ = [
    "FinetuneConfig",
    "PretrainConfig",
    "dump_config",
    "from_dict",
    "load_config",
    "parse_overrides",
    "to_dict",
]
