"""Running MetaSchedule over a model's kernels, and the pass that applies a tuning database in a build."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import tvm
import tvm_ffi
from tvm import tirx

from ember.backends.threads import size_thread_pool
from ember.backends.tvm import tuning, variants
from ember.backends.tvm.schedules.common import Knobs
from ember.backends.tvm.schedules.int8 import registered_intrinsics
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
                    ms_ = 1e3 * tuning.mean_seconds(r.run_secs)
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


@dataclass
class TunedTask:
    """What tuning found for one kernel: trials spent, Ember's rule-scheduled time and the best record's."""

    trials: int  # MetaSchedule's
    baseline_s: float | None
    best_s: float | None
    variant: Knobs | None = None  # the rule variant (ember.backends.tvm.variants) that gave best_s, if one did

    @property
    def db_wins(self) -> bool:
        """Whether `ember compile --tuning-db` takes the record (it has one, and no faster rule baseline)."""
        return self.best_s is not None and (self.baseline_s is None or self.best_s < self.baseline_s)


def _best_seconds(database, task: tuning.Task) -> float | None:
    """Mean seconds of the database's fastest record for `task`, a rule variant's or MetaSchedule's."""
    seconds = []
    for key in tuning.record_keys(task.workload["main"]):
        if not database.has_workload(key):
            continue
        top = database.get_top_k(database.commit_workload(key), 1)
        if top and top[0].run_secs:
            seconds.append(tuning.mean_seconds(top[0].run_secs))
    return min(seconds, default=None)


def tune(
    mod: tvm.IRModule,
    spec: TargetSpec,
    trials: int,
    db_dir: str | Path,
    *,
    rpc: tuple[str, int, str] | None = None,
    progress: tuning.Progress | None = None,
    strategy: str = "evolutionary",
) -> dict[str, TunedTask]:
    """Tune a lowered Relax module's kernels: first the variants of Ember's rules for each kernel (variants.py),
    then MetaSchedule for `trials` measurements in all, split over kernels by FLOPs x calls, adding records to
    the JSON database in `db_dir` and Ember's rule-scheduled time of each measured kernel to its baselines file;
    returns what tuning found per kernel (those a variant or MetaSchedule was run for). Kernels are measured and
    searched for as many threads as they will run on: here, the thread pool's; over RPC, the target's cores."""
    from tvm.s_tir import meta_schedule as ms

    if spec.device != "cpu":
        raise EmberError(f"tuning supports CPU targets; '{spec.name}' is a {spec.device} target")
    tuning.import_tensor_intrinsics()
    tasks = tuning.extract_tasks(mod, spec)
    budget = tuning.split_budget(tasks, trials)
    # Sized before the runner starts its workers, which inherit it.
    cores = size_thread_pool() if rpc is None else int(spec.target.export().get("num-cores", 2))
    target = tuning.tuning_target(spec, cores)
    stale = tuning.retire_stale_database(db_dir)
    if stale is not None:
        log.warning(f"{db_dir} was tuned under another version of Ember's schedule rules; moved it to {stale}")
    database = tuning.open_json_database(db_dir, create=True)
    builder = ms.builder.LocalBuilder(max_workers=1, initializer=tuning.builder_initializer, f_build=tuning.BUILD_FUNC)
    runner = _runner(rpc)
    found: dict[str, TunedTask] = {}
    baselines: dict[int, float] = {}
    for task, n in zip(tasks, budget):
        baseline, variant = variants.search(task, target, builder, runner, database, measure_default=n > 0)
        if baseline is not None:
            baselines[tvm_ffi.structural_hash(task.workload)] = baseline
        if variant is not None:
            found[task.name] = TunedTask(0, baseline, variant.median, variant.knobs)
        if n == 0:
            continue
        callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
        if progress is not None:
            callbacks.append(_measure_callback(progress, task.name, n))
            progress(task.name, 0, n, None)
        context = ms.TuneContext(
            mod=tuning.search_workload(task.workload["main"]),
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
        best = _best_seconds(database, task)
        kept = found.get(task.name)
        found[task.name] = TunedTask(n, baseline, best, kept.variant if kept and kept.best_s == best else None)
    tuning.write_baselines(db_dir, spec.target, baselines)
    tuning.write_rules_stamp(db_dir)
    return found


def _has_xgboost() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


class TunedKernels:
    """The best schedule of each kernel a tuning database holds for one target, applied by `pass_()` where
    it beat Ember's rule schedule as `ember tune` measured it; a kernel with no measured baseline (a database
    from before baselines, or a rule that failed to build) takes the record, as it did before baselines."""

    def __init__(self, db_dir: str | Path, records: dict[int, list], baselines: dict[int, float]) -> None:
        self.db_dir = str(db_dir)
        self.records = records  # structural hash of the workload -> [(workload, trace, mean seconds)]
        self.baselines = baselines  # structural hash of the workload -> seconds of Ember's rule schedule
        self.applied = 0
        self.kept_on_rules = 0

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
        if tuning.rules_changed(db_dir):
            log.warning(
                f"tuning database {db_dir} was measured against another version of Ember's schedule rules, so its "
                "records may be slower than today's; using the default schedules (re-run 'ember tune' into it)"
            )
            return None
        records: dict[int, list] = {}
        foreign = set()
        for r in all_records:
            if r.target is None or not tuning.same_target(r.target, spec.target):
                foreign.add(tuning.summary(r.target) if r.target is not None else "no target")
                continue
            if not r.run_secs:
                continue
            seconds = tuning.mean_seconds(r.run_secs)
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
        return cls(db_dir, records, tuning.read_baselines(db_dir, spec.target))

    def best_record(self, func: tirx.PrimFunc) -> tuple[tvm.IRModule, object, float] | None:
        """The database's fastest record for `func` as (workload, trace, mean seconds), or None: a rule variant's
        or MetaSchedule's (tuning.record_keys)."""
        entries = []
        for key in tuning.record_keys(func):
            entries += [
                e for e in self.records.get(tvm_ffi.structural_hash(key), []) if tvm_ffi.structural_equal(e[0], key)
            ]
        return min(entries, key=lambda e: e[2], default=None)

    def rule_is_faster(self, func: tirx.PrimFunc) -> bool:
        """Whether Ember's rule schedule of `func` measured no slower than the database's best record."""
        best = self.best_record(func)
        baseline = self.baselines.get(tvm_ffi.structural_hash(tuning.workload(func)))
        return best is not None and baseline is not None and baseline <= best[2]

    def schedule(self, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        """`func` scheduled as the database's fastest record for it, or None when it has none."""
        from tvm.s_tir import Schedule

        best = self.best_record(func)
        if best is None:
            return None
        key, trace, _ = best
        registered_intrinsics()  # a record of an int8 rule variant tensorizes with Ember's dot-product intrinsics
        sch = Schedule(key)
        trace.apply_to_schedule(sch, remove_postproc=False)
        scheduled = sch.mod["main"].without_attr("global_symbol")
        for attr in ("global_symbol", "layout_free_buffers"):  # the weights a rule variant repacks are split out
            if attr in func.attrs:
                scheduled = scheduled.with_attr(attr, func.attrs[attr])
        return scheduled.with_attr("tirx.is_scheduled", True)

    def pass_(self) -> tvm.transform.Pass:
        """A module pass that schedules the kernels whose database record beat Ember's rules, counting the
        kernels it schedules and those it leaves to the rules because they measured faster."""

        @tvm.transform.module_pass(opt_level=0, name="EmberApplyTuningDatabase")
        def apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
            updates, kept = {}, 0
            for gv, func in mod.functions_items():
                if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                    continue
                if self.rule_is_faster(func):
                    kept += 1
                    continue
                scheduled = self.schedule(func)
                if scheduled is not None:
                    updates[gv] = scheduled
            for gv, func in updates.items():
                mod[gv] = func
            self.applied, self.kept_on_rules = len(updates), kept
            return mod

        return apply


def tune_model(
    model, target: str, trials: int, db_dir: str | Path, input_shapes=None, **options
) -> dict[str, TunedTask]:
    """Import and optimize `model` as `ember.compile` does at -O2, then `tune` its kernels."""
    from ember.backends.tvm.lower import lower_to_relax
    from ember.backends.tvm.targets import resolve
    from ember.driver import import_model, layout_passes
    from ember.passes import PassManager, parse_pipeline

    if trials < 0:
        raise EmberError(f"--trials must be 0 or more, got {trials}")
    spec = resolve(target)
    graph = import_model(model, input_shapes)
    PassManager(parse_pipeline(2) + layout_passes(spec.layout, 2, None)).run(graph)
    return tune(lower_to_relax(graph, spec.device, target=spec.target), spec, trials, db_dir, **options)
