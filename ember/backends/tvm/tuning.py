"""MetaSchedule tuning of the kernels Ember's CPU pipeline builds, into a JSON database, and applying
that database at compile time (kernels it lacks keep Ember's schedule rules)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import linecache
import logging
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tvm
import tvm_ffi
from tvm import tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from ember.backends.tvm.targets import TargetSpec, summary
from ember.errors import EmberError

log = logging.getLogger("ember")
DB_FILES = ("database_workload.json", "database_tuning_record.json")
Progress = Callable[[str, int, int, float | None], None]  # task, trials done, trials planned, best ms


@dataclass
class Task:
    """One distinct kernel of the model: its workload module, how often the model calls it, its FLOPs."""

    name: str
    workload: tvm.IRModule
    count: int
    flops: float


def fused_kernels(mod: tvm.IRModule, spec: TargetSpec) -> tvm.IRModule:
    """The module as Ember's CPU pipeline has it when schedule rules run: dispatched, legalized, fused, its
    constant weights marked layout-free and its transcendental functions vectorized (schedules.prepare_passes)."""
    from ember.backends.tvm.schedules import prepare_passes

    target = spec.target
    passes = cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target) + prepare_passes()
    with target:
        return tvm.transform.Sequential(passes)(mod)


def workload(func: tirx.PrimFunc) -> tvm.IRModule:
    """The database key of a kernel, normalized as MetaSchedule's TuneContext normalizes a PrimFunc."""
    func = func.with_attr("global_symbol", "main").with_attr("tirx.noalias", True)
    return tvm.IRModule({"main": func})


def search_workload(func: tirx.PrimFunc) -> tvm.IRModule:
    """The kernel MetaSchedule searches: without its layout-free weights' marks (with them, TVM 0.27's evolutionary
    search failed in its layout rewrite: "args.size() == initial_indices_orig.size()")."""
    return workload(func.without_attr("layout_free_buffers"))


def record_keys(func: tirx.PrimFunc) -> tuple[tvm.IRModule, tvm.IRModule]:
    """The keys a kernel's tuning records are stored under: a rule variant's (the kernel as the rules see it, see
    variants.py) and MetaSchedule's (search_workload)."""
    return workload(func), search_workload(func)


def mean_seconds(run_secs) -> float:
    """The mean of a record's (or a runner result's) measured seconds."""
    return sum(float(s) for s in run_secs) / len(run_secs)


def extract_tasks(mod: tvm.IRModule, spec: TargetSpec) -> list[Task]:
    """Distinct unscheduled kernels of a lowered Relax module (deduplicated by structural hash)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    tasks: dict[int, Task] = {}
    fused = fused_kernels(mod, spec)
    calls = _call_counts(fused)
    for gv, func in fused.functions_items():
        if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue
        key = workload(func)
        h = tvm_ffi.structural_hash(key)
        if h in tasks:
            tasks[h].count += calls.get(gv.name_hint, 1)
            continue
        tasks[h] = Task(gv.name_hint, key, calls.get(gv.name_hint, 1), _flops(key, estimate_tir_flops))
    return list(tasks.values())


def _flops(key: tvm.IRModule, estimate) -> float:
    """TVM's FLOP estimate of a kernel; 0 for one it cannot count (a vectorized exp's Let expressions)."""
    try:
        return float(estimate(key))
    except tvm.error.InternalError:
        return 0.0


def _call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many times Relax functions call each kernel through call_tir."""
    from tvm import relax

    from ember.backends.tvm.calls import is_call_tir

    counts: dict[str, int] = {}
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for block in getattr(func.body, "blocks", []):
            for binding in block.bindings:
                if is_call_tir(binding.value):
                    name = binding.value.args[0].name_hint
                    counts[name] = counts.get(name, 0) + 1
    return counts


def split_budget(tasks: list[Task], trials: int) -> list[int]:
    """Trials per task in proportion to FLOPs x calls; tasks whose share is under one trial get none."""
    weights = [max(t.flops, 1.0) * t.count for t in tasks]
    total = sum(weights) or 1.0
    shares = [int(trials * w / total) for w in weights]
    order = sorted(range(len(tasks)), key=lambda i: -weights[i])
    for i in order[: trials - sum(shares)]:
        shares[i] += 1
    return shares


def tuning_target(spec: TargetSpec, cores: int) -> tvm.target.Target:
    """The target MetaSchedule tunes for: Ember's, with the core count its parallel rules need."""
    return tvm.target.Target({**spec.target.export(), "num-cores": cores})


def _fast_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """inspect.stack without its per-frame module search, which makes TVMScript's import take minutes."""
    frames, frame = [], sys._getframe(1)
    while frame is not None:
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        info = inspect.FrameInfo(
            frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, [line] if line else None, 0
        )
        frames.append(info)
        frame = frame.f_back
    return frames


def import_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (TuneContext needs it) with the fast stack walk."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    saved = inspect.stack
    inspect.stack = _fast_stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = saved


def skip_tensor_intrinsics() -> None:
    """Skip importing TVM's tensor intrinsics in a builder worker: scheduled kernels are built without them."""
    sys.modules.setdefault("tvm.s_tir.tensor_intrin", types.ModuleType("tvm.s_tir.tensor_intrin"))


BUILD_FUNC = "ember.tuning.build"


def builder_initializer() -> None:
    """Builder worker initializer: skip TVM's tensor intrinsics and register BUILD_FUNC, which builds a candidate
    with Ember's TIR pipeline, as a model build does (small arrays on the stack: without it a register tile became
    a workspace allocation), after dropping the weight repacking a model build does once at compile time (as
    MetaSchedule's default build does)."""
    skip_tensor_intrinsics()

    @tvm_ffi.register_global_func(BUILD_FUNC, override=True)
    def build(mod: tvm.IRModule, target: tvm.target.Target, _params):
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        from ember.backends.tvm.stack_arrays import PIPELINE

        return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target, PIPELINE)


@contextlib.contextmanager
def _quiet_tvm_loggers() -> Iterator[None]:
    names = ("tvm.s_tir.meta_schedule", "tvm.meta_schedule")
    saved = [(n, logging.getLogger(n).level) for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved:
            logging.getLogger(n).setLevel(level)


def open_json_database(db_dir: str | Path, create: bool):
    """MetaSchedule's JSONDatabase in `db_dir` (made when `create`)."""
    from tvm.s_tir import meta_schedule as ms

    path = Path(db_dir)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(path), allow_missing=create, module_equality="structural")


def check_database_files(db_dir: str | Path) -> str | None:
    """Why `db_dir` is not a readable tuning database, or None when it looks like one."""
    path = Path(db_dir)
    for name in DB_FILES:
        f = path / name
        if not f.is_file():
            return f"{f} is missing"
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError:
                return f"{f} line {n} is not JSON"
    return None


def same_target(a: tvm.target.Target, b: tvm.target.Target) -> bool:
    """Whether two targets name the same chip (num-cores and other tuning-only attributes aside)."""
    return summary(a) == summary(b)


def check_tracker(tracker: str, key: str, timeout_s: float = 10.0) -> tuple[str, int, str]:
    """(host, port, key) of an RPC tracker that answers within `timeout_s` and has a server under `key`."""
    import socket

    from tvm import rpc

    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit():
        raise EmberError(f"bad --rpc-tracker '{tracker}'", hint="write HOST:PORT, e.g. 127.0.0.1:9190")
    fix = "start it with 'python -m tvm.exec.rpc_tracker' or fix --rpc-tracker"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        keys = {s["key"].split(":")[-1] for s in rpc.connect_tracker(host, int(port)).summary()["server_info"]}
    except (OSError, RuntimeError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1][:120]
        raise EmberError(f"cannot reach the RPC tracker at {tracker}: {reason}", hint=fix) from None
    if key not in keys:
        raise EmberError(
            f"no RPC server with key '{key}' is registered at the tracker {tracker}",
            hint=f"start one with 'python -m tvm.exec.rpc_server --tracker {tracker} --key {key}' "
            f"(keys there: {', '.join(sorted(keys)) or 'none'})",
        )
    return host, int(port), key


BASELINES_FILE = "ember_baselines.json"


def read_baselines(db_dir: str | Path, target: tvm.target.Target) -> dict[int, float]:
    """Seconds of Ember's rule-scheduled kernels for `target`, by workload structural hash ({} when none)."""
    path = Path(db_dir) / BASELINES_FILE
    try:
        stored = json.loads(path.read_text()).get(summary(target), {})
        return {int(h): float(s) for h, s in stored.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def write_baselines(db_dir: str | Path, target: tvm.target.Target, baselines: dict[int, float]) -> None:
    """Merge `baselines` (structural hash -> seconds) into the db's baselines file, replacing it atomically."""
    from ember.atomic import write_atomic

    path = Path(db_dir) / BASELINES_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    per_target = stored.setdefault(summary(target), {})
    per_target.update({str(h): s for h, s in baselines.items()})
    write_atomic({path: lambda f: f.write(json.dumps(stored, indent=1, sort_keys=True).encode())})


RULES_FILE = "ember_rules.json"


@functools.cache
def rules_fingerprint() -> str:
    """A hash of Ember's schedule rules and their variants (the sources) and TVM's version: baselines measured
    under other rules no longer say whether a record beats today's rule schedule."""
    from ember.backends.tvm import schedules, variants

    digest = hashlib.sha256(tvm.__version__.encode())
    for source in [*sorted(Path(schedules.__file__).parent.glob("*.py")), Path(variants.__file__)]:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def write_rules_stamp(db_dir: str | Path) -> None:
    """Record in `db_dir` which rules its baselines were measured under."""
    from ember.atomic import write_atomic

    stamp = json.dumps({"rules": rules_fingerprint()}).encode()
    write_atomic({Path(db_dir) / RULES_FILE: lambda f: f.write(stamp)})


def rules_changed(db_dir: str | Path) -> bool:
    """Whether `db_dir` was tuned under other schedule rules than this Ember's (or before they were stamped)."""
    try:
        return json.loads((Path(db_dir) / RULES_FILE).read_text()).get("rules") != rules_fingerprint()
    except (OSError, ValueError, AttributeError):
        return True


def retire_stale_database(db_dir: str | Path) -> Path | None:
    """Move a database tuned under other schedule rules out of `db_dir`'s way, into a `stale-<rules>` folder in
    it, so tuning into it again starts from no records: its old records (every model's, not only the one being
    tuned again) would replay rules as they were, and a fresh stamp would vouch for them. Returns the folder."""
    path = Path(db_dir)
    if not any((path / name).is_file() for name in DB_FILES) or not rules_changed(path):
        return None
    try:
        old = str(json.loads((path / RULES_FILE).read_text()).get("rules"))
    except (OSError, ValueError, AttributeError):
        old = ""
    old = old if re.fullmatch(r"[0-9a-f]{16}", old) else "unstamped"
    names = (f"stale-{old}" + (f"-{n}" if n else "") for n in itertools.count())
    stale = next(path / name for name in names if not (path / name).exists())
    stale.mkdir()
    for name in (*DB_FILES, BASELINES_FILE, RULES_FILE):
        if (path / name).exists():
            (path / name).rename(stale / name)
    return stale
