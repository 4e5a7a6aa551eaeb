"""Calibration: check the sample set against the model's inputs, run the fp32 graph through the interpreter and
collect a range per activation (minmax, percentile, or entropy as TensorRT's KL histogram search)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Graph, Node
from ember.ir.ops import get_schema

METHODS = ("minmax", "percentile", "entropy")
Sample = dict[str, np.ndarray]


def load_samples(data: str | os.PathLike | Iterable[Mapping[str, np.ndarray]], graph: Graph) -> list[Sample]:
    """Calibration samples, each a dict input name -> array of the input's shape and dtype.

    `data` is an iterable of such dicts; an .npz whose arrays, keyed by input name, carry a leading sample axis
    (`images` [N, 1, 3, 32, 32] for an input [1, 3, 32, 32]; for an input whose first dim is 1 the array may
    also be [N, 3, 32, 32], one sample per row); or a folder of .npz (one sample each, keyed by input name) and,
    for a one-input model, .npy files (one sample each), taken in name order."""
    if isinstance(data, (str, os.PathLike)):
        named = _read_path(Path(data), graph)
    else:
        named = [(f"sample {i}", dict(s)) for i, s in enumerate(data)]
    if not named:
        raise EmberError("the calibration set is empty", hint="give at least one sample (100 or more is typical)")
    for label, sample in named:
        check_sample(sample, graph, label)
    return [s for _, s in named]


def _read_path(path: Path, graph: Graph) -> list[tuple[str, Sample]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        return [(f"sample '{p.name}'", _read_one(p, graph)) for p in files]
    if path.suffix != ".npz" or not path.is_file():
        raise EmberError(f"calibration data '{path}' is not an .npz file or a folder of .npy/.npz samples")
    with _open(path) as z:
        arrays = {k: z[k] for k in z.files}
    _check_names(arrays, graph, f"'{path.name}'")
    counts = {}
    for v in graph.inputs:
        arr = arrays[v.name]
        if arr.ndim == v.rank and v.rank and v.shape[0] == 1:
            arrays[v.name] = arr = arr[:, None]
        if arr.ndim != v.rank + 1:
            raise EmberError(
                f"'{path.name}': input '{v.name}' is {list(arr.shape)}; it needs a leading sample axis before the "
                f"input's shape {list(v.shape)}"
            )
        counts[v.name] = arr.shape[0]
    if len(set(counts.values())) > 1:
        raise EmberError(f"'{path.name}': inputs hold different numbers of samples: {counts}")
    n = next(iter(counts.values()), 0)
    return [(f"sample {i} of '{path.name}'", {k: arrays[k][i] for k in counts}) for i in range(n)]


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EmberError(f"cannot read calibration file '{path}': {e}") from None


def _read_one(path: Path, graph: Graph) -> Sample:
    if path.suffix == ".npy":
        if len(graph.inputs) != 1:
            names = ", ".join(v.name for v in graph.inputs)
            raise EmberError(
                f"'{path.name}': an .npy sample fits one-input models; this one has {names}",
                hint="write one .npz per sample, keyed by input name",
            )
        with open(path, "rb") as f:
            try:
                return {graph.inputs[0].name: np.load(f, allow_pickle=False)}
            except (OSError, ValueError) as e:
                raise EmberError(f"cannot read calibration file '{path}': {e}") from None
    with _open(path) as z:
        return {k: z[k] for k in z.files}


def _check_names(sample: Mapping[str, np.ndarray], graph: Graph, label: str) -> None:
    want = [v.name for v in graph.inputs]
    missing = [n for n in want if n not in sample]
    extra = [n for n in sample if n not in want]
    if missing or extra:
        what = f"lacks input '{missing[0]}'" if missing else f"has '{extra[0]}', which is not a model input"
        raise EmberError(f"calibration {label} {what}", hint=f"model inputs: {', '.join(want)}")


def check_sample(sample: Mapping[str, np.ndarray], graph: Graph, label: str) -> None:
    """Names, dtypes and static dims must match the model's inputs, and values must be finite."""
    _check_names(sample, graph, label)
    for v in graph.inputs:
        arr = np.asarray(sample[v.name])
        want = dtypes.to_numpy(v.dtype)
        if arr.dtype != want:
            raise EmberError(f"calibration {label}, input '{v.name}': dtype {arr.dtype}, the model takes {want}")
        if arr.ndim != v.rank or any(isinstance(d, int) and d != s for d, s in zip(v.shape, arr.shape)):
            raise EmberError(
                f"calibration {label}, input '{v.name}': shape {list(arr.shape)}, the model takes {list(v.shape)}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "Inf"
            raise EmberError(f"calibration {label}, input '{v.name}' holds {bad}", hint="drop or clean that sample")


def walk(graph: Graph, feeds: Mapping[str, np.ndarray], visit: Callable[[Node, list, list], None]) -> None:
    """Run the graph like the interpreter, calling visit(node, input arrays, output arrays) after each node."""
    env = {id(v): np.asarray(feeds[v.name]) for v in graph.inputs}
    for node in graph.nodes:
        args = [None if v is None else (v.const if v.is_const else env[id(v)]) for v in node.inputs]
        with np.errstate(all="ignore"):
            outs = get_schema(node.op).evaluate(args, node.attrs)
        outs = [np.asarray(a, dtype=dtypes.to_numpy(o.dtype)) for o, a in zip(node.outputs, outs)]
        for o, a in zip(node.outputs, outs):
            env[id(o)] = a
        visit(node, args, outs)


class RangeCollector:
    """Ranges of the named tensors over all samples. `taps(node, inputs, outputs)` gives {key: array} to record
    for a node (its output, or a layer's value before its epilogue)."""

    BINS = 2048

    def __init__(self, taps: Callable[[Node, list, list], dict[str, np.ndarray]], method: str, percentile: float):
        if method not in METHODS:
            raise EmberError(f"unknown calibration method '{method}'", hint=f"use one of {', '.join(METHODS)}")
        if not 0 < percentile <= 100:
            raise EmberError(f"percentile must be in (0, 100], got {percentile}")
        self.taps, self.method, self.percentile = taps, method, percentile
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.hist: dict[str, np.ndarray] = {}

    def observe_minmax(self, node: Node, ins: list, outs: list) -> None:
        for key, arr in self.taps(node, ins, outs).items():
            self.lo[key] = min(self.lo.get(key, np.inf), float(arr.min()))
            self.hi[key] = max(self.hi.get(key, -np.inf), float(arr.max()))

    def observe_histogram(self, node: Node, ins: list, outs: list) -> None:
        for key, arr in self.taps(node, ins, outs).items():
            h, _ = np.histogram(arr.astype(np.float64), bins=self.BINS, range=self._hist_range(key))
            self.hist[key] = self.hist.get(key, 0) + h

    def _hist_range(self, key: str) -> tuple[float, float]:
        lo, hi = self.lo[key], self.hi[key]
        if self.method == "entropy":
            m = max(abs(lo), abs(hi), 1e-12)
            return (-m, m)
        return (lo, hi if hi > lo else lo + 1e-12)

    def ranges(self, full: set[str] = frozenset()) -> dict[str, tuple[float, float]]:
        """Each key's range by the method; keys in `full` keep their whole observed range."""
        pick = {"minmax": None, "percentile": self._percentile_range, "entropy": self._entropy_range}[self.method]
        return {k: (self.lo[k], self.hi[k]) if pick is None or k in full else pick(k) for k in self.lo}

    def _percentile_range(self, key: str) -> tuple[float, float]:
        lo, hi = self._hist_range(key)
        cdf = np.cumsum(self.hist[key]) / max(self.hist[key].sum(), 1)
        edges = np.linspace(lo, hi, self.BINS + 1)
        tail = 1 - self.percentile / 100
        i_lo = int(np.searchsorted(cdf, tail, side="right"))
        i_hi = int(np.searchsorted(cdf, 1 - tail, side="left"))
        return (max(float(edges[i_lo]), self.lo[key]), min(float(edges[min(i_hi + 1, self.BINS)]), self.hi[key]))

    def _entropy_range(self, key: str) -> tuple[float, float]:
        h = self.hist[key]
        half = self.BINS // 2
        mag = h[half:] + h[:half][::-1]  # histogram of |x| over [0, max|x|], BINS/2 bins
        levels = 256 if self.lo[key] >= 0 else 128
        t = kl_threshold(mag.astype(np.float64), levels) * (self._hist_range(key)[1] / half)
        return (max(self.lo[key], -t), min(self.hi[key], t))


def kl_threshold(hist: np.ndarray, levels: int) -> float:
    """TensorRT's entropy calibration: the histogram bin count (as a threshold) whose clipped, `levels`-level
    quantized distribution is closest in KL divergence to the original (a histogram of |x|, bin 0 ignored)."""
    hist = hist.copy()
    hist[0] = 0  # exact zeros (a relu's spike) quantize exactly; left in, they pull the threshold far down
    n = len(hist)
    if n <= levels or hist.sum() == 0:
        return float(n)
    best, best_i = np.inf, n
    for i in range(levels, n + 1, max(1, (n - levels) // 96)):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for c in chunks:
            nz = hist[c] > 0
            if nz.any():
                q[c[nz]] = hist[c].sum() / nz.sum()
        mask = p > 0
        if (q[mask] == 0).any():
            continue
        p_n, q_n = p / p.sum(), q / q.sum()
        kl = float(np.sum(p_n[mask] * np.log(p_n[mask] / q_n[mask])))
        if kl < best:
            best, best_i = kl, i
    return best_i + 0.5


def calibrate(
    graph: Graph,
    samples: list[Sample],
    taps: Callable[[Node, list, list], dict[str, np.ndarray]],
    method: str = "percentile",
    percentile: float = 99.99,
    progress: bool = True,
) -> dict[str, tuple[float, float]]:
    """Ranges {key: (lo, hi)} of the tapped tensors over the samples; histogram methods take a second pass.
    The graph's outputs keep their whole range: clipping the logits is never what the method's trade means."""
    collector = RangeCollector(taps, method, percentile)
    passes = [collector.observe_minmax] + ([] if method == "minmax" else [collector.observe_histogram])
    with _progress(progress, len(samples) * len(passes)) as advance:
        for observe in passes:
            for sample in samples:
                walk(graph, sample, observe)
                advance()
    return collector.ranges({v.name for v in graph.outputs})


class _progress:
    """A rich progress bar over calibration runs (quiet when disabled or not on a terminal)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar.start()
        task = self.bar.add_task("calibrate", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
