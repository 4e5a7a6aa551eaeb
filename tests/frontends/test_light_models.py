"""Every real topology shipped in onnx's backend/test/data/light: import, interpret and compile for the
host, each compared with onnxruntime (rtol 1e-4, atol 1e-5) on seeded random weights and inputs."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import ir
from ember.frontends.onnx import load
from ember.models import LIGHT_MODELS, random_light_model
from tests.conftest import assert_close, ort_run, random_feeds


@pytest.fixture(scope="module", params=LIGHT_MODELS)
def light(request):
    model = random_light_model(request.param, seed=0)
    feeds = random_feeds(model, seed=1)
    feeds = {k: np.abs(v) for k, v in feeds.items()}  # image-like, non-negative
    return request.param, model, feeds, ort_run(model, feeds)


def test_interpreter_matches_onnxruntime(light):
    name, model, feeds, want = light
    graph = load(model)
    ir.verify(graph)
    assert_close(ir.interpret(graph, feeds), want)


def test_host_build_matches_onnxruntime(light):
    name, model, feeds, want = light
    artifact = ember.compile(model, "host")
    assert artifact.output_names == [o.name for o in model.graph.output]
    assert_close(artifact.run(feeds), want)
