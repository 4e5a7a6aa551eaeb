"""`ember bench`: Ember and onnxruntime timed in one process, with per-kernel times."""

from __future__ import annotations

import json

import onnx

from ember.backends.threads import physical_cores
from ember.bench import bench, time_alternating
from ember.models.blocks import mobile_block
from tests.cli.test_cli import assert_one_line_error, ember


def test_bench_json_times_both_and_lists_kernels(tmp_path):
    path = tmp_path / "mobile.onnx"
    onnx.save(mobile_block(), path)
    r = ember("bench", str(path), "--runs", "3", "--threads", "1", "--per-op", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["threads"] == 1 and result["ember"]["runs"] == 3 and result["onnxruntime"]["runs"] == 3
    assert result["ratio"] == result["ember"]["median"] / result["onnxruntime"]["median"] > 0
    kernels = result["kernels"]
    assert kernels and all(k["calls"] >= 1 and k["total_ms"] >= 0 for k in kernels)
    assert [k["total_ms"] for k in kernels] == sorted((k["total_ms"] for k in kernels), reverse=True)


def test_bench_table(tmp_path):
    path = tmp_path / "mobile.onnx"
    onnx.save(mobile_block(), path)
    r = ember("bench", str(path), "--runs", "2")
    assert r.returncode == 0, r.stderr
    assert "onnxruntime" in r.stdout and "ember / onnxruntime:" in r.stdout
    assert f"{physical_cores()} threads" in r.stdout  # by default, as onnxruntime sizes its pool


def test_bench_bad_arguments(tmp_path):
    path = tmp_path / "mobile.onnx"
    onnx.save(mobile_block(), path)
    assert_one_line_error(ember("bench", str(path), "--threads", "0"), "--threads must be at least 1")
    assert_one_line_error(ember("bench", str(path), "--target", "aarch64-linux-gnu", "--runs", "1"), "cannot run")


def test_time_alternating_interleaves_runners():
    order: list[str] = []
    times = time_alternating([lambda: order.append("a"), lambda: order.append("b")], runs=3, warmup=1)
    assert order == ["a", "b"] * 4  # one warm-up each, then a/b alternating
    assert [len(t) for t in times] == [3, 3]
    order.clear()
    times = time_alternating([lambda: order.append("a"), lambda: order.append("b")], runs=5, warmup=0, block=2)
    assert order == ["a", "a", "b", "b", "a", "a", "b", "b", "a", "b"] and [len(t) for t in times] == [5, 5]


def test_bench_without_onnxruntime_comparison():
    result = bench(mobile_block(), runs=2, compare=False)
    assert result.onnxruntime is None and result.ratio is None and result.ember.runs == 2
