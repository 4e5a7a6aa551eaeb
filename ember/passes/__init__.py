"""Graph passes: the registry, the PassManager and Ember's built-in passes."""

from ember.passes import dce, fold_constants  # noqa: F401  (registration)
from ember.passes.manager import (
    OPT_LEVELS,
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
    "PassInfo",
    "PassManager",
    "PassRecord",
    "all_passes",
    "get_pass",
    "parse_pipeline",
    "register",
]
