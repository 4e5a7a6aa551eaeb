"""The test models the onnx package ships with their inputs and expected outputs (onnx/backend/test/data:
PyTorch-exported layers and operators, and small hand-written graphs): each runs through the interpreter and
a host build and matches the expected outputs (tests.conftest.assert_close: rtol 1e-4, atol 1e-5 scaled), or
is refused with one EmberError line naming what is not supported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import ember
from ember import ir
from ember.frontends.onnx import load
from tests.conftest import assert_close

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = sorted(
    f"{d.parent.name}/{d.name}"
    for suite in ("pytorch-converted", "pytorch-operator", "simple")
    for d in (DATA / suite).iterdir()
    if (d / "model.onnx").exists()
)
UNSUPPORTED = "unsupported ONNX ops"
# What Ember refuses, and the words its error says it with.
REFUSED = {
    **{f"simple/test_sequence_model{i}": UNSUPPORTED for i in range(1, 9)},
    "simple/test_gradient_of_add": UNSUPPORTED,
    "simple/test_gradient_of_add_and_mul": UNSUPPORTED,
    "simple/test_shrink": UNSUPPORTED,
    **{
        f"simple/test_strnorm_model_{v}": UNSUPPORTED
        for v in (
            "monday_casesensintive_lower",
            "monday_casesensintive_nochangecase",
            "monday_casesensintive_upper",
            "monday_empty_output",
            "monday_insensintive_upper_twodim",
            "nostopwords_nochangecase",
        )
    },
}
# The interpreter runs these, but their output shape comes from an input's values: no static build.
SHAPE_FROM_VALUES = {f"simple/test_expand_shape_model{i}" for i in range(1, 5)}


def _tensors(folder: Path, kind: str) -> list[np.ndarray]:
    files = sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[-1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]


def _data_sets(path: Path) -> list[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    model = onnx.load(str(path / "model.onnx"))
    weights = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in weights]
    sets = sorted(path.glob("test_data_set_*"))
    return [(dict(zip(names, _tensors(d, "input"))), _tensors(d, "output")) for d in sets]


def test_the_suites_are_there():
    assert len(CASES) >= 130 and set(REFUSED) | SHAPE_FROM_VALUES <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_onnx_backend_model(case):
    path = DATA / case
    if case in REFUSED:
        with pytest.raises(ember.EmberError, match=REFUSED[case]) as error:
            load(path / "model.onnx")
        assert "\n" not in str(error.value) and "model.onnx" in str(error.value)
        return
    graph = load(path / "model.onnx")
    artifact = None
    if case in SHAPE_FROM_VALUES:
        with pytest.raises(ember.EmberError, match="is not static"):
            ember.compile(path / "model.onnx", "host")
    else:
        artifact = ember.compile(path / "model.onnx", "host")
    for feeds, want in _data_sets(path):
        assert_close(ir.interpret(graph, feeds), want)
        if artifact is not None:
            assert_close(artifact.run(feeds), want)
