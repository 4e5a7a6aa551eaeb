"""Graph passes: the registry, the PassManager and Ember's built-in passes."""

from ember.passes import canonicalize, cse, dce, fold_constants, fuse_conv_bn  # noqa: F401  (registration)
from ember.passes.manager import (
    OPT_LEVELS,
    Instrument,
    PassInfo,
    PassManager,
    PassRecord,
    all_passes,
    get_pass,
    parse_pipeline,
    register,
)

__all__ = [
    "OPT_LEVELS",
    "Instrument",
    "PassInfo",
    "PassManager",
    "PassRecord",
    "all_passes",
    "get_pass",
    "parse_pipeline",
    "register",
]
