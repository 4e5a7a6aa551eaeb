"""Lowering of concat along the innermost axis as a kernel whose choice of input is uniform across SIMD lanes."""

from __future__ import annotations

import math

from tvm import relax, s_tir, te, tirx
from tvm.relax import op as R
from tvm.tirx.function import IndexMap

from ember.backends.tvm.rules import rule
from ember.ir import dtypes

INJECTIVE = 2  # TVM's OpPatternKind::kInjective


def concat_last_axis(*xs: te.Tensor) -> te.Tensor:
    """Concatenate along the last axis, choosing the input by `c < end` tests (`end <= c` does not simplify)."""
    sizes = [int(x.shape[-1]) for x in xs]
    starts = [sum(sizes[:k]) for k in range(len(xs))]

    def element(*index):
        *lead, c = index
        value = xs[-1][(*lead, c - starts[-1])]
        for x, start, size in reversed(list(zip(xs[:-1], starts, sizes))):
            value = tirx.if_then_else(c < start + size, x[(*lead, c - start)], value)
        return value

    total = tirx.IntImm(xs[0].shape[-1].ty, sum(sizes))
    return te.compute((*xs[0].shape[:-1], total), element, name="T_concat")


def concat_kernel(shapes: list[list[int]], dtype: str) -> tirx.PrimFunc:
    """The concat kernel, its last axis iterated as (c // g, c % g) for g the gcd of the input widths: the
    schedule vectorizes within g, where `c < end` is the same for every lane; over c alone (TOPI's concat)
    the test varied across lanes and the copy compiled to scalar code. It stays injective for fusion, which
    TVM's pattern analysis cannot tell from the split iterators."""
    xs = [te.placeholder([tirx.IntImm("int64", d) for d in shape], dtype, f"x{k}") for k, shape in enumerate(shapes)]
    sch = s_tir.Schedule(te.create_prim_func([*xs, concat_last_axis(*xs)]))
    g = math.gcd(*(shape[-1] for shape in shapes))
    split = IndexMap.from_func(lambda *i: (*i[:-1], i[-1] // g, i[-1] % g), ndim=len(shapes[0]))
    sch.transform_block_layout(sch.get_sblock("T_concat"), split)
    return sch.mod["main"].without_attr("global_symbol").with_attr("op_pattern", INJECTIVE)


@rule("concat")
def _concat(L, n, a):
    axis = n.attrs["axis"] % n.output.rank
    if len(a) < 2 or axis != n.output.rank - 1 or not all(v.is_static and v.shape[-1] > 0 for v in n.inputs):
        return R.concat(a, axis=n.attrs["axis"])
    dtype = dtypes.to_tvm(n.output.dtype)
    kernel = L.bb.add_func(concat_kernel([list(v.shape) for v in n.inputs], dtype), "concatenate")
    return relax.call_tir(kernel, a, relax.TensorType(list(n.output.shape), dtype))
