"""`ember run --rpc`: a bundle runs on a TVM RPC server (started here on 127.0.0.1) like a host run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from click.testing import CliRunner

import ember
from ember.cli.main import cli
from ember.models.blocks import mobile_block
from tests.backends.rpc_procs import free_port, launch, stop, wait_listening


@pytest.fixture
def rpc_server():
    port = free_port()
    proc = launch(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)])
    try:
        wait_listening(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def test_rpc_run_matches_host_run(rpc_server, tmp_path):
    from ember.backends.remote import run_remote

    bundle = ember.compile(mobile_block(0)).save(tmp_path / "b")
    artifact = ember.load(bundle)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    remote = run_remote(artifact, feeds, rpc_server)
    host = artifact.run(feeds)
    assert list(remote) == list(host)
    for name in host:
        np.testing.assert_allclose(remote[name], host[name], rtol=1e-6, atol=1e-6)
    result = CliRunner().invoke(cli, ["run", str(bundle), "--rpc", rpc_server])
    assert result.exit_code == 0, result.output
    assert "y: float32" in result.output


def test_dead_rpc_address_is_one_line_error_naming_it(tmp_path):
    bundle = ember.compile(mobile_block(0)).save(tmp_path / "b")
    dead = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["run", str(bundle), "--rpc", dead])
    assert time.monotonic() - start < 20
    assert result.exit_code == 2
    assert f"cannot reach the RPC server at {dead}" in result.output
    assert "Traceback" not in result.output
