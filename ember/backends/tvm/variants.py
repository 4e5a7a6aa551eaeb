"""Searching the parameters of Ember's own schedule rules per kernel (`ember tune`'s first phase).

The rules' register-tile budgets, reduction chunks and cache-blocking bound were chosen on whole models; one kernel
may run faster with another. Each distinct schedule the rules write under `variants()` is built and timed by
MetaSchedule's builder and runner, in turns; a variant that beats the default by `MARGIN` becomes a tuning record
(its schedule trace) in the database, which `ember compile --tuning-db` replays as it replays MetaSchedule's.
Thread-pool use is not varied: run alone in the runner, a kernel on one thread measured faster than on the pool for
29 of SqueezeNet's 37 kernels, and the model built from those records ran 1.25-1.4x as long."""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import tvm
import tvm_ffi
from tvm import s_tir

from ember.backends.tvm import tuning
from ember.backends.tvm.schedules import cpu_rules, vector_bits
from ember.backends.tvm.schedules.common import Knobs, knobs
from ember.backends.tvm.schedules.int8 import registered_intrinsics

MARGIN = 0.03  # a variant must measure this much faster than the default to be recorded
ROUNDS = 3  # each candidate is timed once a round, in turns, a round starting where the last did not; the median
BUDGETS = {512: (8, 12, 24), 256: (6, 8, 16), 128: (8, 16, 24)}  # accumulators to try besides the default
K_CHUNKS = (128, 512)
SMALL_KS = (0, 1 << 20)  # every 1x1 conv cache-blocked; only those past conv2d.SMALL_POINTWISE_BYTES


def variants(bits: int) -> list[Knobs]:
    """The default knobs first, then one change at a time."""
    return (
        [Knobs()]
        + [Knobs(accumulators=a) for a in BUDGETS[bits]]
        + [Knobs(k_chunk=k) for k in K_CHUNKS]
        + [Knobs(small_k=k) for k in SMALL_KS]
    )


@dataclass
class Candidate:
    """One distinct schedule of a kernel, the knobs that gave it, and its measured seconds."""

    knobs: Knobs
    schedule: s_tir.Schedule
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("inf")


def candidates(workload: tvm.IRModule, target: tvm.target.Target) -> list[Candidate]:
    """The distinct schedules Ember's rules write for `workload` under each of `variants`, default first; a
    schedule whose trace does not replay to the same kernel is dropped (the database stores traces)."""
    registered_intrinsics()
    found: list[Candidate] = []
    for k in variants(vector_bits(target)):
        with target, knobs(k):
            sch = _rule_schedule(workload, target)
        if sch is None:
            return []  # no rule takes the kernel
        if any(tvm_ffi.structural_equal(sch.mod, c.schedule.mod) for c in found):
            continue
        replayed = s_tir.Schedule(workload)
        sch.trace.apply_to_schedule(replayed, remove_postproc=False)
        if not found or tvm_ffi.structural_equal(replayed.mod, sch.mod):  # the default is measured, not recorded
            found.append(Candidate(k, sch, []))
    return found


def _rule_schedule(workload: tvm.IRModule, target: tvm.target.Target) -> s_tir.Schedule | None:
    func = workload["main"]
    for rule in cpu_rules(target):
        sch = rule.apply(func, target, False)
        if isinstance(sch, list):
            sch = sch[0] if sch else None
        if sch is not None:
            return sch
    return None


def measure(found: list[Candidate], target, builder, runner) -> None:
    """Time each candidate ROUNDS times, in turns, appending seconds (mean of a runner's repeats) to each."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(c.schedule.mod, target) for c in found])
    try:
        ok = [(c, b) for c, b in zip(found, built) if b.error_msg is None]
        # arguments as built: the weights in the layout a rule repacks them to (the build drops the repacking)
        args = [ms.arg_info.ArgInfo.from_entry_func(c.schedule.mod, remove_preproc=True) for c, _ in ok]
        runs = [(c, ms.runner.RunnerInput(b.artifact_path, "cpu", a)) for (c, b), a in zip(ok, args)]
        for r in range(ROUNDS if runs else 0):
            turn = runs[r % len(runs) :] + runs[: r % len(runs)]  # each round starts with another candidate
            for (c, _), future in zip(turn, runner.run([i for _, i in turn])):
                result = future.result()
                if result.error_msg is None and result.run_secs:
                    c.seconds.append(tuning.mean_seconds(result.run_secs))
    finally:
        for b in built:
            if b.artifact_path:
                shutil.rmtree(Path(b.artifact_path).parent, ignore_errors=True)


def search(
    task: tuning.Task, target, builder, runner, database, measure_default: bool = False
) -> tuple[float | None, Candidate | None]:
    """(the default schedule's seconds, the recorded variant or None) for one kernel: a variant faster than the
    default by MARGIN is committed to `database` as a tuning record. A kernel the knobs do not change is measured
    only with `measure_default`."""
    from tvm.s_tir import meta_schedule as ms

    found = candidates(task.workload, target)
    if not found or (len(found) == 1 and not measure_default):
        return None, None
    measure(found, target, builder, runner)
    default, best = found[0], min(found, key=lambda c: c.median)
    baseline = default.median if default.seconds else None
    if best is default or baseline is None or best.median > baseline * (1 - MARGIN):
        return baseline, None
    record = ms.database.TuningRecord(
        best.schedule.trace,
        database.commit_workload(task.workload),
        [best.median],
        target,
        ms.arg_info.ArgInfo.from_prim_func(task.workload["main"]),
    )
    database.commit_tuning_record(record)
    return baseline, best
