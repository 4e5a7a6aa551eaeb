"""Ember's CPU runs and tuning measurements use one TVM thread per physical core unless the user sets a count:
TVM's own default halves the logical CPUs on x86, which ran a 2-core VM single-threaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ember.backends.threads import THREAD_VARIABLES, physical_cores, size_thread_pool


def _topology(root, cpu: int, package: int, core: int) -> None:
    folder = root / f"cpu{cpu}" / "topology"
    folder.mkdir(parents=True)
    (folder / "physical_package_id").write_text(f"{package}\n")
    (folder / "core_id").write_text(f"{core}\n")


def test_hyperthreads_of_one_core_count_once(tmp_path):
    """Two packages with core ids 0 and 1 each; CPUs 0 and 4 are one core's two hyper-threads."""
    for cpu, package, core in [(0, 0, 0), (4, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]:
        _topology(tmp_path, cpu, package, core)
    assert physical_cores({0, 4}, tmp_path) == 1
    assert physical_cores({0, 1, 2, 3, 4}, tmp_path) == 4
    assert physical_cores({7, 8}, tmp_path) == 2  # no topology: each CPU counts


def test_a_thread_count_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    assert size_thread_pool() == 3 and os.environ["TVM_NUM_THREADS"] == "3"
    monkeypatch.delenv("TVM_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert size_thread_pool() == 5 and "TVM_NUM_THREADS" not in os.environ
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert size_thread_pool() == physical_cores() and os.environ["TVM_NUM_THREADS"] == str(physical_cores())


RUN_AND_COUNT = textwrap.dedent(
    """
    import tvm, ember
    from ember.models import random_feeds
    from ember.models.blocks import mobile_block
    model = mobile_block()
    artifact = ember.compile(model, "host")
    artifact.run(random_feeds(model))
    print("threads", tvm.get_global_func("runtime.NumThreads")())
    """
)


@pytest.mark.parametrize("setting", [None, "1"])
def test_a_host_run_uses_every_physical_core_unless_told(setting):
    """In a fresh process (TVM sizes its pool once per thread), a model run with no thread count set gets one
    thread per physical core; TVM_NUM_THREADS still wins."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if setting is not None:
        env["TVM_NUM_THREADS"] = setting
    r = subprocess.run([sys.executable, "-c", RUN_AND_COUNT], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split()[-2:] == ["threads", setting or str(physical_cores())]
