"""The VM's main function compiled to machine code (CPU default) against TVM's bytecode interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import EmberError
from ember.backends.tvm.build import kernel_names
from ember.bench import kernel_times
from tests.passes.quant_models import cnn_onnx, samples


@pytest.fixture(scope="module")
def builds():
    """{(quantize, exec_mode): artifact} for the trained CNN."""
    calib = samples(16, seed=5)
    return {
        (q, mode): ember.compile(cnn_onnx(), "host", quantize=q, calibration=calib if q else None, exec_mode=mode)
        for q in (None, "int8")
        for mode in (None, "bytecode")
    }


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_compiled_main_is_the_cpu_default_and_runs_the_same_kernels_bit_for_bit(builds, quantize, tmp_path):
    compiled, bytecode = builds[(quantize, None)], builds[(quantize, "bytecode")]
    assert compiled.metadata["exec_mode"] == "compiled" and bytecode.metadata["exec_mode"] == "bytecode"
    names = kernel_names(compiled.executable)
    assert names == kernel_names(bytecode.executable) and len(names) >= 3
    loaded = ember.load(compiled.save(tmp_path / "cnn"))
    for feeds in samples(3, seed=9):
        want = bytecode.run(feeds)["logits"]
        for art in (compiled, loaded):  # tolerance: none, the same kernels on the same inputs
            np.testing.assert_array_equal(art.run(feeds)["logits"], want)


def test_per_kernel_times_need_the_bytecode_build(builds):
    feeds = samples(1, seed=9)[0]
    with pytest.raises(EmberError, match="bytecode"):
        kernel_times(builds[("int8", None)], feeds)
    timed = kernel_times(builds[("int8", "bytecode")], feeds, runs=2)
    assert {k.name for k in timed} == kernel_names(builds[("int8", "bytecode")].executable)


def test_unknown_exec_mode_is_refused():
    with pytest.raises(EmberError, match="exec_mode must be 'bytecode' or 'compiled'"):
        ember.compile(cnn_onnx(), "host", exec_mode="jit")
