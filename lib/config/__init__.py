"""The configuration: `cfg` holds the defaults, `update_config` merges an experiment into it,
and `check_config` (run by every merge) refuses impossible values."""

from lib.config.checks import ConfigValueError, check_config
from lib.config.default import _C as cfg
from lib.config.default import (
    ConfigKeyError,
    check_keys,
    default_config,
    merge_from_file,
    merge_from_list,
    update_config,
)

__all__ = [
    "cfg",
    "update_config",
    "merge_from_file",
    "merge_from_list",
    "check_keys",
    "check_config",
    "default_config",
    "ConfigKeyError",
    "ConfigValueError",
]
