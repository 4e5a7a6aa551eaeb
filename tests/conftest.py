"""Shared test helpers: building small ONNX models and running them in onnxruntime."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ember.models import random_feeds  # noqa: F401  (shared with the benchmarks)
from ember.models.blocks import make_model  # noqa: F401  (the tests build their small models with it)

RTOL, ATOL = 1e-4, 1e-5
os.environ["EMBER_VERIFY_EACH"] = "1"  # every compile in the tests checks the IR after each pass


def load_repo_script(relative: str) -> ModuleType:
    """A script of this repository that is not a package module (scripts/, benchmarks/), imported by path."""
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(f"ember_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ort_run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_close(got: dict[str, np.ndarray] | list, want: list[np.ndarray], rtol=RTOL, atol=ATOL) -> None:
    """rtol 1e-4 and atol 1e-5, the atol scaled by the output's largest magnitude when that exceeds 1
    (deep float32 nets reorder sums differently; 1e-5 of a logit of 20 is below float32 resolution)."""
    got_list = list(got.values()) if isinstance(got, dict) else list(got)
    assert len(got_list) == len(want)
    for g, w in zip(got_list, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        scale = max(1.0, float(np.abs(w).max())) if w.size and w.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
