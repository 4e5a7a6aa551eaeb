"""Graph passes: the registry, the PassManager and Ember's built-in passes."""

from ember.passes import (  # noqa: F401  (registration)
    canonicalize,
    conv_transpose_to_conv,
    convert_layout,
    cse,
    dce,
    expand_volumes,
    fold_constants,
    fold_scale,
    fuse_activation,
    fuse_attention,
    fuse_bias_add,
    fuse_conv_bn,
    fuse_layer_norm,
    fuse_qconv_pool,
    matmul_to_dense,
    recognize_activations,
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
