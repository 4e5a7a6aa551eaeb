"""Check a saved bundle against onnxruntime on seeded random inputs: on the host, or under qemu-user."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.backends.artifact import Artifact
from ember.errors import EmberError
from ember.ir.dtypes import to_numpy

RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Verified:
    """How a bundle ran (host or emulated) and each output's largest absolute difference from onnxruntime."""

    how: str
    max_abs_error: dict[str, float]


def random_inputs(artifact: Artifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the bundle's shapes: standard normals for floats, 0/1 for integers and booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in artifact.metadata["inputs"]:
        shape = [d if isinstance(d, int) else 1 for d in spec["shape"]]
        dtype = to_numpy(spec["dtype"])
        values = rng.standard_normal(shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 2, shape)
        feeds[spec["name"]] = values.astype(dtype)
    return feeds


def how_to_run(artifact: Artifact) -> str:
    """'host', 'emulated under qemu-…' or 'cuda'; an EmberError saying why when this machine cannot run the bundle."""
    from ember.backends.runtime import QEMU, cuda_driver_present, host_arch

    if artifact.device == "cuda" and artifact.arch == host_arch():
        if not cuda_driver_present():
            raise EmberError("cannot run a cuda bundle here: this machine has no CUDA driver (libcuda.so)")
        return "cuda"
    if artifact.device != "cpu":
        raise EmberError(f"cannot run a {artifact.device} bundle here: verification runs CPU and CUDA bundles only")
    if artifact.arch == host_arch():
        return "host"
    qemu = QEMU.get(artifact.arch)
    if qemu is None or shutil.which(qemu) is None:
        raise EmberError(f"{qemu or 'qemu-user'} is not installed to run the {artifact.arch} bundle here")
    return f"emulated under {qemu}"


def verify(artifact: Artifact, model: str | os.PathLike, seed: int = 0) -> Verified:
    """Run the saved `artifact` and onnxruntime on the same random inputs; raise EmberError naming the worst
    output when any differs by more than rtol 1e-4 + atol 1e-5 (atol scaled by the output's magnitude above 1)."""
    if Path(model).suffix != ".onnx":
        raise EmberError("verification compares with onnxruntime and needs an .onnx model", file=str(model))
    how = how_to_run(artifact)
    feeds = random_inputs(artifact, seed)
    want = _onnxruntime(model, feeds)
    got = artifact.run(feeds, emulate=how.startswith("emulated"))
    errors, worst = {}, None
    for (name, g), w in zip(got.items(), want):
        if g.shape != w.shape:
            raise EmberError(f"output '{name}' has shape {list(g.shape)}, onnxruntime's {list(w.shape)}")
        errors[name], excess = tolerance_excess(g, w)
        if excess > 0 and (worst is None or excess > worst[1]):
            worst = (name, excess)
    if worst is not None:
        raise EmberError(
            f"output '{worst[0]}' differs from onnxruntime by up to {errors[worst[0]]:.3g} ({how}, seed {seed}; "
            f"allowed: rtol {RTOL:g}, atol {ATOL:g} times the output's largest magnitude above 1)"
        )
    return Verified(how, errors)


def tolerance_excess(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(largest absolute difference, how far the worst element is over rtol RTOL + atol ATOL times the
    output's largest magnitude above 1): the second is positive when `got` fails the check."""
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    if not diff.size:
        return 0.0, 0.0
    scale = max(1.0, float(np.abs(want).max())) if want.dtype.kind == "f" else 1.0
    return float(diff.max()), float((diff - (ATOL * scale + RTOL * np.abs(want))).max())


def _onnxruntime(model: str | os.PathLike, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EmberError("onnxruntime is not installed", hint="pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
