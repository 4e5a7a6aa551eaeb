"""How many threads TVM's CPU thread pool gets when the user has not said. TVM's own default is half the logical
CPUs on x86 (to skip hyper-threads), which on a machine without them leaves half its cores idle: a 2-core VM ran
Ember single-threaded, and `ember tune` measured every candidate on one thread for a 2-thread deployment.
Ember sizes the pool as onnxruntime does, one thread per physical core this process may run on."""

from __future__ import annotations

import os
from pathlib import Path

THREAD_VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")  # what TVM reads, in its order
CPU_SYSFS = Path("/sys/devices/system/cpu")


def physical_cores(cpus: set[int] | None = None, sysfs: Path = CPU_SYSFS) -> int:
    """The physical cores among `cpus` (default: the CPUs this process may run on), counting hyper-threads of
    one core once; where the topology cannot be read, every CPU counts."""
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(tuple((topology / name).read_text().strip() for name in ("physical_package_id", "core_id")))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(len(cores), 1)


def size_thread_pool() -> int:
    """Give TVM's thread pool one thread per physical core unless TVM_NUM_THREADS or OMP_NUM_THREADS says
    otherwise; returns the thread count in force. TVM reads it when a thread first runs a parallel kernel, and
    worker processes started afterwards (tuning's runners) inherit it."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return max(int(value) if value.isdigit() else 0, 1)  # as TVM reads it (atoi, at least 1)
    threads = physical_cores()
    os.environ["TVM_NUM_THREADS"] = str(threads)
    return threads
