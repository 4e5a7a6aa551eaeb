"""Running MetaSchedule over a model's kernels, and the pass that applies a tuning database in a build."""

from __future__ import annotations

import logging
from pathlib import Path

import tvm
import tvm_ffi
from tvm import tirx

from ember.backends.tvm import tuning
from ember.backends.tvm.targets import TargetSpec
from ember.errors import EmberError

log = logging.getLogger("ember")


def _measure_callback(progress: tuning.Progress, name: str, planned: int):
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Report(ms.measure_callback.PyMeasureCallback):
        """Reports trials done and the best latency so far to `progress` after each measured batch."""

        def __init__(self) -> None:
            super().__init__()
            self.done = 0
            self.best: float | None = None

        def apply(self, _scheduler, _task_id, _candidates, _builder_results, runner_results) -> None:
            for r in runner_results:
                self.done += 1
                if r.error_msg is None and r.run_secs:
                    ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                    self.best = ms_ if self.best is None else min(self.best, ms_)
            progress(name, self.done, planned, self.best)

    return Report()


def _runner(rpc: tuple[str, int, str] | None):
    from tvm.s_tir import meta_schedule as ms

    if rpc is None:
        return ms.runner.LocalRunner(timeout_sec=30)
    host, port, key = rpc
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=60)
    return ms.runner.RPCRunner(rpc_config=config, max_workers=1)


def tune(
    mod: tvm.IRModule,
    spec: TargetSpec,
    trials: int,
    db_dir: str | Path,
    *,
    rpc: tuple[str, int, str] | None = None,
    progress: tuning.Progress | None = None,
    strategy: str = "evolutionary",
    cores: int = 2,
) -> dict[str, int]:
    """Tune a lowered Relax module's kernels for `trials` measurements in all, split over kernels by
    FLOPs x calls, adding records to the JSON database in `db_dir`; returns trials planned per kernel."""
    from tvm.s_tir import meta_schedule as ms

    if spec.device != "cpu":
        raise EmberError(f"tuning supports CPU targets; '{spec.name}' is a {spec.device} target")
    tuning.import_tensor_intrinsics()
    tasks = tuning.extract_tasks(mod, spec)
    budget = tuning.split_budget(tasks, trials)
    target = tuning.tuning_target(spec, cores)
    database = tuning.open_json_database(db_dir, create=True)
    builder = ms.builder.LocalBuilder(max_workers=1, initializer=tuning.skip_tensor_intrinsics)
    runner = _runner(rpc)
    planned = {}
    for task, n in zip(tasks, budget):
        if n == 0:
            continue
        planned[task.name] = n
        callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
        if progress is not None:
            callbacks.append(_measure_callback(progress, task.name, n))
            progress(task.name, 0, n, None)
        context = ms.TuneContext(
            mod=task.workload,
            target=target,
            space_generator="post-order-apply",
            search_strategy=strategy,
            task_name=task.name,
            num_threads=cores,
        ).clone()
        ms.tune.tune_tasks(
            tasks=[context],
            task_weights=[1.0],
            work_dir=str(db_dir),
            max_trials_global=n,
            num_trials_per_iter=min(n, 64),
            builder=builder,
            runner=runner,
            database=database,
            cost_model="xgb" if _has_xgboost() else "random",
            measure_callbacks=callbacks,
        )
    return planned


def _has_xgboost() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


class TunedKernels:
    """The best schedule of each kernel a tuning database holds for one target, applied by `pass_()`."""

    def __init__(self, db_dir: str | Path, records: dict[int, list]) -> None:
        self.db_dir = str(db_dir)
        self.records = records  # structural hash of the workload -> [(workload, trace, mean seconds)]
        self.applied = 0

    @classmethod
    def load(cls, db_dir: str | Path, spec: TargetSpec) -> TunedKernels | None:
        """The database's records for `spec`'s target, or None (with a warning) when it is unusable."""
        problem = tuning.check_database_files(db_dir)
        if problem is None:
            try:
                database = tuning.open_json_database(db_dir, create=False)
                all_records = list(database.get_all_tuning_records())
            except (RuntimeError, ValueError, TypeError) as e:
                problem = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        if problem is not None:
            log.warning(f"tuning database {db_dir} is unusable ({problem}); using the default schedules")
            return None
        records: dict[int, list] = {}
        foreign = set()
        for r in all_records:
            if r.target is None or not tuning.same_target(r.target, spec.target):
                foreign.add(tuning.summary(r.target) if r.target is not None else "no target")
                continue
            if not r.run_secs:
                continue
            seconds = sum(float(s) for s in r.run_secs) / len(r.run_secs)
            entry = (r.workload.mod, r.trace, seconds)
            records.setdefault(tvm_ffi.structural_hash(r.workload.mod), []).append(entry)
        if not records:
            what = f"records for {', '.join(sorted(foreign))}" if foreign else "no measured records"
            log.warning(
                f"tuning database {db_dir} has {what}, none for {tuning.summary(spec.target)}; "
                "using the default schedules (tune for this target with 'ember tune')"
            )
            return None
        for entries in records.values():
            entries.sort(key=lambda e: e[2])
        return cls(db_dir, records)

    def schedule(self, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        """`func` scheduled as the database's fastest record for it, or None when it has none."""
        from tvm.s_tir import Schedule

        key = tuning.workload(func)
        for mod, trace, _ in self.records.get(tvm_ffi.structural_hash(key), []):
            if not tvm_ffi.structural_equal(mod, key):
                continue
            sch = Schedule(key)
            trace.apply_to_schedule(sch, remove_postproc=False)
            scheduled = sch.mod["main"].without_attr("global_symbol")
            if "global_symbol" in func.attrs:
                scheduled = scheduled.with_attr("global_symbol", func.attrs["global_symbol"])
            return scheduled.with_attr("tirx.is_scheduled", True)
        return None

    def pass_(self) -> tvm.transform.Pass:
        """A module pass that schedules the kernels the database has records for, counting them."""

        @tvm.transform.module_pass(opt_level=0, name="EmberApplyTuningDatabase")
        def apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
            updates = {}
            for gv, func in mod.functions_items():
                if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                    scheduled = self.schedule(func)
                    if scheduled is not None:
                        updates[gv] = scheduled
            for gv, func in updates.items():
                mod[gv] = func
            self.applied = len(updates)
            return mod

        return apply


def tune_model(model, target: str, trials: int, db_dir: str | Path, input_shapes=None, **options) -> dict[str, int]:
    """Import and optimize `model` as `ember.compile` does at -O2, then `tune` its kernels."""
    from ember.backends.tvm.lower import lower_to_relax
    from ember.backends.tvm.targets import resolve
    from ember.driver import import_model, layout_passes
    from ember.passes import PassManager, parse_pipeline

    if trials < 1:
        raise EmberError(f"--trials must be at least 1, got {trials}")
    spec = resolve(target)
    graph = import_model(model, input_shapes)
    PassManager(parse_pipeline(2) + layout_passes(spec.layout, 2, None)).run(graph)
    return tune(lower_to_relax(graph), spec, trials, db_dir, **options)
