"""benchmarks/cpu_latency.py's model GFLOP, which its GFLOP/s column divides by each engine's time."""

from __future__ import annotations

import pytest

from ember.models.blocks import bert_layer, mobilenet_v2
from tests.conftest import load_repo_script

cpu_latency = load_repo_script("benchmarks/cpu_latency.py")


def _bert_gflop(seq: int = 128, hidden: int = 768, ffn: int = 3072) -> float:
    projections = 4 * 2 * seq * hidden * hidden  # Q, K, V and the output
    attention = 2 * 2 * seq * seq * hidden  # scores and the weighted sum, over all heads
    return (projections + attention + 2 * 2 * seq * hidden * ffn) / 1e9


@pytest.mark.parametrize(
    "model, gflop",
    [
        (bert_layer, _bert_gflop()),  # its attention's matmuls follow Reshapes: shapes need data propagation
        (mobilenet_v2, 0.6015),  # 300.8 M multiply-adds, as published for MobileNetV2-224 (300 M)
    ],
    ids=["bert", "mobilenet_v2"],
)
def test_model_gflop_counts_convs_and_matmuls(model, gflop):
    assert cpu_latency.model_gflop(model()) == pytest.approx(gflop, rel=1e-3)
