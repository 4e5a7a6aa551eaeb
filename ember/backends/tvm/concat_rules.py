"""Concat along the innermost axis: lowered to a kernel whose choice of input is uniform across SIMD lanes, and
removed after scheduling (concat_in_place) where the kernels producing its inputs can write its slices."""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import ir, relax, s_tir, te, tirx
from tvm.ir import IRModule
from tvm.relax import op as R
from tvm.tirx.function import IndexMap

from ember.backends.tvm.calls import INJECTIVE, is_call_tir
from ember.backends.tvm.rules import rule
from ember.ir import dtypes

CONCAT_ATTR = "ember.concat_last_axis"  # marks the concat kernel for concat_in_place
OPAQUE_CALLS = {  # calls that take a buffer's pointer: a kernel using one keeps its own output buffer
    f"tirx.{name}"
    for name in ("address_of", "tvm_access_ptr", "call_extern", "call_pure_extern", "call_packed", "call_cpacked")
}


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
    return sch.mod["main"].without_attr("global_symbol").with_attr("op_pattern", INJECTIVE).with_attr(CONCAT_ATTR, True)


@rule("concat")
def _concat(L, n, a):
    axis = n.attrs["axis"] % n.output.rank
    if len(a) < 2 or axis != n.output.rank - 1 or not all(v.is_static and v.shape[-1] > 0 for v in n.inputs):
        return R.concat(a, axis=n.attrs["axis"])
    dtype = dtypes.to_tvm(n.output.dtype)
    kernel = L.bb.add_func(concat_kernel([list(v.shape) for v in n.inputs], dtype), "concatenate")
    return relax.call_tir(kernel, a, relax.TensorType(list(n.output.shape), dtype))


@tvm.transform.module_pass(opt_level=0, name="ConcatInPlace")
def concat_in_place(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Have the kernels that produce a last-axis concat's inputs write their slices of its output, so the concat
    copy goes: the first writes a buffer of the concat's shape, each next one writes in place into it
    (call_tir_inplace). Applies where every input is a kernel result used only by the concat."""
    writers, rewritten = _SliceWriters(mod), {}
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
            uses = _use_counts(func)
            blocks = [_rewrite_block(writers, b, uses) for b in func.body.blocks]
            body = relax.SeqExpr(blocks, func.body.body)
            rewritten[gv] = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    if not writers.made:
        return mod
    mod = writers.bb.get()
    for gv, func in rewritten.items():
        mod[gv] = func
    return mod


def _use_counts(func: relax.Function) -> dict:
    counts: dict = {}

    def count(expr) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, count)
    relax.analysis.post_order_visit(func.body.body, count)
    return counts


def _rewrite_block(writers: _SliceWriters, block, uses: dict):
    if not isinstance(block, relax.DataflowBlock):
        return block
    bound = {b.var: b for b in block.bindings}
    dropped, chains = set(), {}
    for binding in block.bindings:
        inputs = _concat_producers(writers.mod, binding, bound, uses)
        if inputs is not None:
            dropped.update(b.var for chain in inputs for b in chain)
            chains[binding.var] = writers.chain(binding, [chain[-1] for chain in inputs])
    if not chains:
        return block
    bindings = [new for b in block.bindings if b.var not in dropped for new in chains.get(b.var, [b])]
    return relax.DataflowBlock(bindings)


def _concat_producers(mod: IRModule, binding, bound: dict, uses: dict) -> list | None:
    """For a concat kernel call, the bindings of its inputs' kernel calls and of the aliases between (`lv = lv1`,
    as SplitLayoutRewritePreproc leaves them), when each of those is used once."""
    concat = binding.value
    if not (is_call_tir(concat) and CONCAT_ATTR in (mod[concat.args[0]].attrs or {})):
        return None
    inputs = list(concat.args[1].fields)
    if len({id(x) for x in inputs}) < len(inputs):
        return None
    chains = []
    for x in inputs:
        chain = []
        while isinstance(x, relax.Var) and x in bound and uses.get(x) == 1:
            chain.append(bound[x])
            if not isinstance(bound[x].value, relax.Var):
                break
            x = bound[x].value
        producer = chain[-1].value if chain else None
        if not is_call_tir(producer) or len(producer.args) > 2:
            return None
        kernel = mod[producer.args[0]]
        if not isinstance(kernel, tirx.PrimFunc) or not _writes_by_index(kernel):
            return None
        chains.append(chain)
    return chains


def _writes_by_index(func: tirx.PrimFunc) -> bool:
    """Whether the kernel reaches buffers only by indexed loads and stores, with no pointer-taking call (an
    extern or packed call, address_of), so shifting the output's indices moves every write."""
    opaque = []

    def visit(node):
        if isinstance(node, ir.Call) and isinstance(node.op, ir.Op) and node.op.name in OPAQUE_CALLS:
            opaque.append(node)
        return node

    tvm_ffi.structural_map(func.body, [(ir.Call, visit)])
    return not opaque


class _SliceWriters:
    """The kernels that write a slice of a concat's output, made once per (kernel, offset, shape)."""

    def __init__(self, mod: IRModule):
        self.mod, self.bb = mod, relax.BlockBuilder(mod)
        self.made: dict[tuple, relax.GlobalVar] = {}

    def chain(self, concat, producers: list) -> list:
        """Bindings computing the concat: producer k writes channels [start_k, start_k + width_k) of one
        buffer, the first allocating it."""
        out_ty = concat.value.ty_args[0]
        shape = [int(d) for d in concat.var.ty.shape]
        bindings, start, previous = [], 0, None
        for k, producer in enumerate(producers):
            call = producer.value
            args = list(call.args[1].fields)
            gv = self.writer(call.args[0], start, shape)
            if previous is None:
                value = relax.call_tir(gv, relax.Tuple(args), out_ty)
            else:
                value = relax.call_tir_inplace(gv, relax.Tuple([*args, previous]), len(args), out_ty)
            last = k == len(producers) - 1
            var = concat.var if last else relax.DataflowVar(f"{producer.var.name}_into", concat.var.ty)
            bindings.append(relax.VarBinding(var, self.bb.normalize(value)))
            previous, start = var, start + int(producer.var.ty.shape[-1])
        return bindings

    def writer(self, gv, start: int, shape: list[int]) -> relax.GlobalVar:
        """Kernel `gv` with its output a buffer of `shape`, written at last-axis offset `start`."""
        key = (gv.name_hint, start, tuple(shape))
        if key not in self.made:
            func = _write_at(self.mod[gv], start, shape)
            self.made[key] = self.bb.add_func(func, f"{gv.name_hint}_into_{shape[-1]}_at_{start}")
        return self.made[key]


def _write_at(func: tirx.PrimFunc, start: int, shape: list[int]) -> tirx.PrimFunc:
    """`func` with its output buffer replaced by one of `shape`, every access to it shifted by `start` along the
    last axis."""
    old = func.params[-1]
    new = tirx.decl_buffer([tirx.IntImm(old.shape[-1].ty, d) for d in shape], old.dtype, old.name)

    def plus_start(index):
        return index + tirx.IntImm(index.ty, start)

    def shifted(indices):
        return [*indices[:-1], plus_start(indices[-1])] if start else list(indices)

    def buffer(v):
        return new if v.same_as(old) else v

    def store(s):
        return tirx.BufferStore(new, s.value, shifted(s.indices)) if s.buffer.same_as(new) else s

    def load(e):
        return tirx.BufferLoad(new, shifted(e.indices)) if e.source.same_as(new) else e

    def region(r):
        if not r.source.same_as(new) or not start:
            return r
        last = r.region[-1]
        return tirx.BufferRegion(new, [*r.region[:-1], ir.Range.from_min_extent(plus_start(last.min), last.extent)])

    callbacks = [(ir.Var, buffer), (tirx.BufferStore, store), (ir.TensorLoad, load), (ir.TensorRegion, region)]
    body = tvm_ffi.structural_map(func.body, callbacks)  # uses only: the parameter (a definition) is swapped here
    return tirx.PrimFunc([*func.params[:-1], new], body, func.ret_type, func.attrs)
