"""Calibration data in its three forms (input dicts, an .npz with a sample axis, a folder of samples) and the
one-line errors bad data gets: names, shapes, dtypes, an empty set, NaN; each names the sample and input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ember import EmberError
from ember.ir.graph import Graph
from ember.passes.quantize import load_samples, quantize_graph


def two_input_graph() -> Graph:
    g = Graph()
    g.add_input("images", (1, 4), "f32")
    g.add_input("mask", (1, 4), "f32")
    return g


def one_input_graph() -> Graph:
    g = Graph()
    x = g.add_input("images", (1, 4), "f32")
    g.outputs = [g.emit("dense", x, g.add_constant(np.eye(4, dtype=np.float32), "w"), name="fc")]
    return g


def ok(n=1):
    return np.ones((1, 4), np.float32) * n


def test_npz_with_a_sample_axis_or_rows_and_a_folder(tmp_path):
    g = two_input_graph()
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 1, 4), np.float32), mask=np.ones((3, 1, 4), np.float32))
    assert len(load_samples(tmp_path / "a.npz", g)) == 3
    np.savez(tmp_path / "b.npz", images=np.zeros((5, 4), np.float32), mask=np.ones((5, 4), np.float32))
    samples = load_samples(tmp_path / "b.npz", g)
    assert len(samples) == 5 and samples[0]["images"].shape == (1, 4)
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"{i}.npy", ok(i))
    assert [s["images"][0, 0] for s in load_samples(folder, one_input_graph())] == [0, 1]


@pytest.mark.parametrize(
    "sample, message",
    [
        ({"images": ok()}, "calibration sample 1 lacks input 'mask'"),
        ({"images": ok(), "mask": ok(), "extra": ok()}, "sample 1 has 'extra', which is not a model input"),
        ({"images": ok(), "mask": np.ones((1, 5), np.float32)}, "sample 1, input 'mask': shape [1, 5]"),
        ({"images": ok().astype(np.float64), "mask": ok()}, "sample 1, input 'images': dtype float64"),
        ({"images": ok(), "mask": np.array([[0, np.nan, 0, 0]], np.float32)}, "sample 1, input 'mask' holds NaN"),
        ({"images": ok() * np.inf, "mask": ok()}, "sample 1, input 'images' holds Inf"),
    ],
)
def test_bad_samples_name_sample_and_input(sample, message):
    good = {"images": ok(), "mask": ok()}
    with pytest.raises(EmberError, match=re.escape(message)):
        load_samples([good, sample], two_input_graph())


def test_empty_sets_and_bad_files(tmp_path):
    g = two_input_graph()
    with pytest.raises(EmberError, match="the calibration set is empty"):
        load_samples([], g)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmberError, match="the calibration set is empty"):
        load_samples(tmp_path / "empty", g)
    np.savez(tmp_path / "n.npz", images=np.zeros((0, 1, 4), np.float32), mask=np.zeros((0, 1, 4), np.float32))
    with pytest.raises(EmberError, match="the calibration set is empty"):
        load_samples(tmp_path / "n.npz", g)
    np.savez(tmp_path / "nan.npz", images=np.full((2, 1, 4), np.nan, np.float32), mask=np.zeros((2, 1, 4), np.float32))
    with pytest.raises(EmberError, match="sample 0 of 'nan.npz', input 'images' holds NaN"):
        load_samples(tmp_path / "nan.npz", g)
    np.savez(tmp_path / "odd.npz", images=np.zeros((2, 1, 4), np.float32), mask=np.zeros((3, 1, 4), np.float32))
    with pytest.raises(EmberError, match="different numbers of samples"):
        load_samples(tmp_path / "odd.npz", g)
    np.save(tmp_path / "x.npy", ok())
    with pytest.raises(EmberError, match="not an .npz file or a folder"):
        load_samples(tmp_path / "x.npy", g)
    with pytest.raises(EmberError, match="an .npy sample fits one-input models"):
        load_samples(tmp_path, g)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EmberError, match="cannot read calibration file"):
        load_samples(tmp_path / "junk.npz", g)


def test_bad_options():
    g = one_input_graph()
    with pytest.raises(EmberError, match="needs calibration data"):
        quantize_graph(g, None, arch="x86_64")
    with pytest.raises(EmberError, match="unknown calibration method 'kl'"):
        quantize_graph(g, [{"images": ok()}], arch="x86_64", method="kl")
    with pytest.raises(EmberError, match="unknown quantization 'int4'"):
        quantize_graph(g, [{"images": ok()}], arch="x86_64", mode="int4")
    with pytest.raises(EmberError, match="--skip-ops names 'fc9'.*layers: fc"):
        quantize_graph(g, [{"images": ok()}], arch="x86_64", skip_ops=("fc9",))
