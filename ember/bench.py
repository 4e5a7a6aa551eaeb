"""Timing a compiled model against onnxruntime in one process, and time per kernel through the VM."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.ir.dtypes import to_numpy


@dataclass
class Timing:
    """Latency statistics in milliseconds over `runs` timed runs."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(ms.min()), float(ms.max()), len(ms))


@dataclass
class KernelTime:
    name: str
    calls: int
    total_ms: float  # summed over the calls of one model run


@dataclass
class BenchResult:
    model: str
    target: str
    threads: int
    compile_s: float
    ember: Timing
    onnxruntime: Timing | None
    kernels: list[KernelTime] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """Ember's median latency over onnxruntime's (below 1 means Ember is faster)."""
        return None if self.onnxruntime is None else self.ember.median / self.onnxruntime.median

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool (before the first run in this process, as TVM reads it once)."""
    if threads < 1:
        raise EmberError(f"--threads must be at least 1, got {threads}")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    # TVM pins the calling thread to a core once it runs; onnxruntime's work on that thread would then
    # share one core (measured: SqueezeNet's onnxruntime time tripled). Unpinned, Ember's time is the same.
    os.environ.setdefault("TVM_BIND_THREADS", "0")


def random_inputs(artifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs matching the artifact's input specs (floats ~N(0,1), integers in [0, 10))."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in artifact.metadata["inputs"]:
        if not all(isinstance(d, int) for d in spec["shape"]):
            raise EmberError(
                f"input '{spec['name']}' has dynamic dims {spec['shape']}", hint="pass --input-shape NAME:D0,D1,..."
            )
        dt = to_numpy(spec["dtype"])
        arr = (
            rng.standard_normal(spec["shape"]) if np.issubdtype(dt, np.floating) else rng.integers(0, 10, spec["shape"])
        )
        feeds[spec["name"]] = np.asarray(arr).astype(dt)
    return feeds


def _ort_runner(model: Any, feeds: Mapping[str, np.ndarray], threads: int) -> Callable[[], object] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, dict(feeds))


def timed_runs(run: Callable[[], object], n: int) -> list[float]:
    """Seconds of each of `n` consecutive calls of `run`."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def time_alternating(
    runners: list[Callable[[], object]], runs: int, warmup: int = 2, block: int = 1, pause: float = 0.0
) -> list[list[float]]:
    """Seconds per run for each runner, taking turns `block` runs at a time so load changes hit all of them
    alike; `pause` seconds before each turn let the other runtime's spinning worker threads go idle."""
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    while len(times[0]) < runs:
        n = min(block, runs - len(times[0]))
        for i, run in enumerate(runners):
            time.sleep(pause)
            times[i] += timed_runs(run, n)
    return times


def kernel_times(artifact, feeds: Mapping[str, np.ndarray], runs: int = 5) -> list[KernelTime]:
    """Time per kernel the VM calls (median run of `runs`), slowest first. Needs a bytecode build
    (`exec_mode="bytecode"`): a compiled main calls its kernels directly, out of TVM's instruments' sight."""
    if artifact.metadata.get("exec_mode") == "compiled":
        raise EmberError(
            "per-kernel times need the VM's bytecode: this artifact's main is compiled",
            hint='compile with exec_mode="bytecode"',
        )
    vm, run = artifact.host_vm(), artifact.runner(feeds)
    per_run: list[dict[str, list[float]]] = []
    started: dict[str, float] = {}

    def instrument(func, name, before_run, ret_value, *rest):
        if name.startswith("vm.builtin"):
            return 0
        if before_run:
            started[name] = time.perf_counter()
        else:
            per_run[-1].setdefault(name, []).append(time.perf_counter() - started.pop(name))
        return 0

    vm.set_instrument(instrument)
    try:
        for _ in range(runs + 1):
            per_run.append({})
            run()
    finally:
        vm.set_instrument(lambda *a: 0)
    per_run = per_run[1:]  # the first run warms caches
    names = per_run[0].keys()
    result = [KernelTime(n, len(per_run[0][n]), float(np.median([sum(r[n]) for r in per_run]) * 1e3)) for n in names]
    return sorted(result, key=lambda k: -k.total_ms)


def bench(
    model: Any,
    target: str = "host",
    input_shapes: Mapping[str, Any] | None = None,
    *,
    threads: int | None = None,
    runs: int = 20,
    per_op: bool = False,
    compare: bool = True,
    **compile_options: Any,
) -> BenchResult:
    """Compile `model` for a host-runnable target, then time Ember and onnxruntime (same thread count, by
    default one per physical core, as each sizes its own pool) alternately in this process."""
    from ember.backends.threads import physical_cores
    from ember.driver import compile as ember_compile

    threads = physical_cores() if threads is None else threads
    set_threads(threads)
    start = time.perf_counter()
    artifact = ember_compile(model, target, input_shapes, **compile_options)
    compile_s = time.perf_counter() - start
    feeds = random_inputs(artifact)
    runners = [artifact.runner(feeds)]
    ort = _ort_runner(model, feeds, threads) if compare and _is_onnx(model) else None
    if ort is not None:
        runners.append(ort)
    # Both thread pools busy-wait after a run; whole turns with a pause keep them off each other's cores.
    times = time_alternating(runners, runs, block=max(1, runs // 4), pause=0.05)
    result = BenchResult(
        model=_name(model),
        target=target,
        threads=threads,
        compile_s=compile_s,
        ember=Timing.of(times[0]),
        onnxruntime=Timing.of(times[1]) if ort is not None else None,
    )
    if per_op:  # the same kernels, called by the bytecode interpreter, whose calls TVM's instruments see
        profiled = ember_compile(model, target, input_shapes, exec_mode="bytecode", **compile_options)
        result.kernels = kernel_times(profiled, feeds)
    return result


def _is_onnx(model: Any) -> bool:
    import onnx

    return isinstance(model, onnx.ModelProto) or str(model).endswith(".onnx")


def _name(model: Any) -> str:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model.graph.name or "model"
    return os.path.basename(str(model))
