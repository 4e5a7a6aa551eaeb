"""Graph passes: the registry, the PassManager and Ember's built-in passes."""

from ember.passes import (  # noqa: F401  (registration)
    canonicalize,
    cse,
    dce,
    fold_constants,
    fold_scale,
    fuse_bias_add,
    fuse_conv_bn,
    matmul_to_dense,
)
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
