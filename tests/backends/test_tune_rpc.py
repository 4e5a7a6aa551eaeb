"""`ember tune --rpc-tracker`: measurements run on an RPC server registered with a tracker (both started
here on 127.0.0.1); an unreachable tracker or an unknown key is a one-line error, exit 2."""

from __future__ import annotations

import time

import onnx
import pytest
from click.testing import CliRunner

from ember.cli.main import cli
from tests.backends.rpc_procs import free_port, launch, stop, wait_listening
from tests.backends.test_tuning import small_conv

pytest.importorskip("xgboost")


@pytest.fixture(scope="module")
def tracker():
    """A tracker with one RPC server under the key 'ember-test'; yields the tracker's HOST:PORT."""
    from tvm import rpc

    port = free_port()
    procs = [launch(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)])]
    try:
        wait_listening(port, procs[0])
        procs.append(launch(["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", "ember-test"]))
        deadline = time.monotonic() + 60
        while not rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]:
            assert time.monotonic() < deadline and procs[1].poll() is None, "the RPC server did not register"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_tune_measures_through_the_tracker(tracker, tmp_path):
    from ember.backends.tvm.targets import resolve
    from ember.backends.tvm.tuned import TunedKernels, tune_model
    from ember.backends.tvm.tuning import check_tracker

    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    rpc = check_tracker(tracker, "ember-test")
    found = tune_model(str(model), "host", 2, tmp_path / "db", rpc=rpc, strategy="replay-trace")
    assert sum(t.trials for t in found.values()) == 2
    assert any(t.best_s and t.baseline_s for t in found.values())  # both measured through the RPC runner
    assert TunedKernels.load(tmp_path / "db", resolve("host")) is not None  # records measured over RPC


def test_unreachable_tracker_or_unknown_key_is_one_line_error(tracker, tmp_path):
    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    dead = f"127.0.0.1:{free_port()}"
    cases = [(dead, "ember-test", f"cannot reach the RPC tracker at {dead}"), (tracker, "nope", "no RPC server")]
    for address, key, message in cases:
        start = time.monotonic()
        args = ["tune", str(model), "--db", str(tmp_path / "db"), "--rpc-tracker", address, "--rpc-key", key]
        result = CliRunner().invoke(cli, args)
        assert time.monotonic() - start < 20
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
