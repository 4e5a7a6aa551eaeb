"""Block-sparse kernels on the host: the compiled sparse model equals the pruned dense model run by the
interpreter (rtol 1e-4) on both kernel paths (batch 1: vector over a block's rows; batch 16: vector over
the batch) and on the unstructured (1x1-block) kernels of both, on an ONNX transformer FFN and a 1x1-conv
CNN, and stores its weights compressed."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import ember
from benchmarks.sparse import cnn, ffn
from ember.ir.interpreter import interpret


def _check(model, shape, sparsity, pattern):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    options = {"pattern": pattern, "threshold": 0.6}  # 2:4 weights are half dense: above the default
    sparse = ember.compile(model, "host", sparsity=sparsity, sparsity_options=options)
    dense = ember.compile(model, "host", sparsity=sparsity, sparsity_options=options, sparse_lowering=False)
    assert "sparse_dense" in sparse.graph.op_counts() and "sparse_dense" not in dense.graph.op_counts()
    want = interpret(dense.graph, {"x": x})["y"]
    got = sparse.run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    return sparse


@pytest.mark.parametrize(
    "batch, pattern, sparsity",
    [
        (1, "unstructured", 0.9),
        (3, "unstructured", 0.8),
        (16, "unstructured", 0.9),
        (16, "block:8x1", 0.9),
        (16, "2:4", None),
        (3, "4x4", 0.8),
    ],
)
def test_ffn_sparse_build_matches_pruned_dense(batch, pattern, sparsity):
    artifact = _check(ffn(batch, d=128, h=512), (batch, 128), sparsity, pattern)
    meta = artifact.metadata["sparsity"]
    assert meta["layers_bsr"] == 2
    if pattern != "2:4":  # 2:4 as 1x1 BSR: half the values plus an index each, about the dense size
        assert meta["weight_bytes_stored"] < 0.5 * meta["weight_bytes_dense"]


def test_cnn_1x1_convs_run_sparse(tmp_path):
    artifact = _check(cnn(2, c=32, wide=64, hw=6), (2, 32, 6, 6), 0.9, "block:4x4")
    assert artifact.metadata["sparsity"]["layers_bsr"] == 4
    artifact.save(tmp_path / "b")
    assert (tmp_path / "b" / "sparsity_report.json").exists()


def test_weights_are_stored_compressed(tmp_path):
    model = ffn(1, d=256, h=1024)
    ember.compile(model, "host").save(tmp_path / "dense")
    ember.compile(model, "host", sparsity=0.9, sparsity_options={"pattern": "block:4x4"}).save(tmp_path / "sparse")
    sizes = [(tmp_path / d / "model.so").stat().st_size for d in ("dense", "sparse")]
    assert sizes[1] < 0.4 * sizes[0], sizes


def test_unstructured_index_width_follows_the_reduction_axis():
    """The first layer reduces over 32784 inputs (past int16: 32-bit indices), the second over 16 (16-bit)."""
    _check(ffn(1, d=32784, h=16), (1, 32784), 0.9, "unstructured")


def test_pad_rows_keeps_the_weight():
    """Unstructured rows (one empty, one shorter than LANES, one longer) padded with zeros at column 0 sum to the
    same W (padding repeats column 0, so the kernels add entries rather than assign them)."""
    from ember.ir.ops.sparse import ROW_LANES as LANES
    from ember.ir.ops.sparse import bsr_from_dense, pad_rows

    w = np.zeros((3, 24), np.float32)
    w[1, [2, 5, 7]] = [1.0, -2.0, 3.0]
    w[2, : LANES + 3] = np.arange(1, LANES + 4)
    data, indices, indptr = pad_rows(*bsr_from_dense(w, (1, 1)))
    assert not np.any(np.diff(indptr) % LANES) and indptr[-1] == 3 * LANES
    summed = np.zeros_like(w)
    np.add.at(summed, (np.repeat(np.arange(3), np.diff(indptr)), indices), data[:, 0, 0])
    np.testing.assert_array_equal(summed, w)


def _sparse_kernel_constants(graph) -> list[int]:
    """Bytes of the weight constants each sparse_dense kernel call takes (all but its input and its bias)."""
    from tvm import relax

    from ember.backends.tvm.lower import lower_to_relax

    calls: list[relax.Call] = []

    def visit(e) -> None:
        if isinstance(e, relax.Call) and e.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            if e.args[0].name_hint.startswith("sparse_dense"):
                calls.append(e)

    relax.analysis.post_order_visit(lower_to_relax(graph)["main"], visit)
    return [sum(np.from_dlpack(c.value).nbytes for c in call.args[1].fields[1:-1]) for call in calls]


@pytest.mark.parametrize("batch, pattern", [(1, "unstructured"), (16, "unstructured"), (1, "block:4x4")])
def test_report_counts_the_bytes_the_kernels_store(batch, pattern):
    """bytes_stored is the size of the constants the compiled kernels take (unstructured: rows padded to groups,
    16-bit indices; batch 1 and the batch-vector layout), from the backend's own packing, not a formula of its own."""
    artifact = ember.compile(ffn(batch, d=128, h=512), "host", sparsity=0.9, sparsity_options={"pattern": pattern})
    rows = artifact.sparsity_report
    assert _sparse_kernel_constants(artifact.graph) == [r.bytes_stored for r in rows]
    ratio = sum(r.bytes_stored for r in rows) / sum(r.bytes_dense for r in rows)
    assert ratio < (0.2 if pattern == "unstructured" else 0.25), ratio  # 4-byte indices would be 0.2


def test_batch1_kernel_reads_half_values_with_32_bit_indices():
    """f16 values with 32-bit indices (K > 32768): a packed group is 8 halves then 8 int32, 12 int32 slots; the
    kernel's index view counts them in index units (an integer ratio of the bit widths was 0)."""
    from ember.backends.tvm.sparse import scalar_kernel
    from ember.ir.ops.sparse import bsr_from_dense, stored_bsr

    rng = np.random.default_rng(0)
    k, n = 40000, 8
    w = np.where(rng.random((n, k)) < 0.001, rng.standard_normal((n, k)), 0).astype(np.float16)
    packed, gptr = stored_bsr(*bsr_from_dense(w, (1, 1)), k, rows=1)
    kernel = scalar_kernel(1, k, n, *packed.shape, "int32", "float16")
    mod = tvm.compile(tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")}), "llvm")
    x = rng.standard_normal((1, k)).astype(np.float16)
    y = tvm.runtime.empty((1, n), "float16")
    mod["main"](*[tvm.runtime.tensor(a) for a in (x, packed, gptr, np.zeros(n, np.float16))], y)
    want = x.astype(np.float32) @ w.T.astype(np.float32)
    np.testing.assert_allclose(y.numpy().astype(np.float32), want, rtol=2e-2, atol=5e-2)  # f16 sums of ~40 terms
