"""The runtime cache is written through a staging folder: a failure midway leaves neither a partial runtime nor
the staging folder."""

from __future__ import annotations

import pytest

from ember.backends import runtime


def test_a_failed_host_runtime_link_leaves_no_staging_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))

    def disk_full():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime, "runtime_versions", disk_full)
    with pytest.raises(OSError):
        runtime.host_runtime()
    left = [p.name for p in runtime.cache_root().iterdir()]
    assert not [name for name in left if name.startswith(".runtime-")], left
    assert not runtime.cache_dir(runtime.host_arch()).exists()
