"""`ember runtime`, `ember doctor`, `compile --standalone/--verify` and emulated runs on good and bad input:
one-line errors with exit status 2 naming the cause and the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ember.backends.runtime import host_arch
from ember.cli.main import cli
from ember.models import random_feeds
from ember.models.blocks import mobile_block
from tests.cli.test_cli import EMBER, assert_one_line_error, ember

ARM_TOOLS = shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++") and shutil.which("make")
needs_arm = pytest.mark.skipif(not ARM_TOOLS, reason="qemu-aarch64, aarch64-linux-gnu-g++ or make missing (make tools)")
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1", "PIP_CONFIG_FILE": os.devnull}


def path_without(folder, *missing: str) -> str:
    """A PATH with every program of this one but `missing`, as on a machine where those are not installed."""
    folder.mkdir()
    for d in reversed(os.environ["PATH"].split(os.pathsep)):
        for exe in Path(d).glob("*") if Path(d).is_dir() else []:
            if exe.name not in missing:
                (folder / exe.name).unlink(missing_ok=True)
                (folder / exe.name).symlink_to(exe)
    return str(folder)


def ember_env(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMBER, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "mobile.onnx"
    onnx.save(mobile_block(), path)
    return path


@pytest.fixture(scope="module")
def host_bundle(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "host"
    r = ember("compile", str(model_file), "-o", str(out), "--verify")
    assert r.returncode == 0, r.stderr
    assert "verified against onnxruntime (host, seed 0): max abs error" in r.stdout
    return out


@pytest.fixture(scope="module")
def arm_bundle(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "arm"
    r = ember("compile", str(model_file), "-t", "aarch64-linux-gnu", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def x_input(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("x") / "x.npy"
    np.save(path, random_feeds(mobile_block())["x"])
    return f"x={path}"


def _copy_with_meta(bundle, dest, **target):
    shutil.copytree(bundle, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    meta["target"].update(target)
    (dest / "metadata.json").write_text(json.dumps(meta))
    return dest


@needs_arm
def test_runtime_fetch_prints_cache_versions_and_sha256s():
    r = ember("runtime", "fetch", "--arch", "aarch64")
    assert r.returncode == 0, r.stderr
    assert "runtime cached in " in r.stdout and "apache-tvm 0.27" in r.stdout
    for lib in ("libtvm_runtime.so", "libtvm_ffi.so", "libtvm_runtime_cuda.so"):  # the CUDA module for Jetsons
        assert f"lib/{lib}  sha256 " in r.stdout
    r = ember("runtime", "list")
    assert r.returncode == 0 and "aarch64  ok" in r.stdout


def test_runtime_fetch_armv7_says_how_to_build_one(tmp_path):
    r = ember_env("runtime", "fetch", "--arch", "armv7", EMBER_CACHE=str(tmp_path))
    assert_one_line_error(r, "no prebuilt TVM runtime for armv7", "arm-linux-gnueabihf-g++", "cmake")


def test_runtime_fetch_offline_names_the_cause_and_the_fix(tmp_path):
    r = ember_env("runtime", "fetch", "--arch", "aarch64", EMBER_CACHE=str(tmp_path), **OFFLINE)
    assert_one_line_error(r, "cannot download the aarch64 TVM runtime", "apache-tvm 0.27", "PIP_INDEX_URL")
    assert not list(tmp_path.rglob("*.so"))


@needs_arm
def test_emulated_run_offline_without_a_cached_runtime(arm_bundle, x_input, tmp_path):
    r = ember_env("run", str(arm_bundle), "--input", x_input, "--emulate", EMBER_CACHE=str(tmp_path), **OFFLINE)
    assert_one_line_error(r, "cannot download the aarch64 TVM runtime", "ember runtime fetch --arch aarch64")


def test_doctor_reports_and_exits_0(tmp_path):
    r = ember_env("doctor", "--json", PATH=str(tmp_path), EMBER_CACHE=str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = {c["component"]: c for checks in json.loads(r.stdout).values() for c in checks}
    assert rows["host C++ compiler"] == {
        "component": "host C++ compiler",
        "ok": False,
        "detail": "no g++ on PATH",
        "fix": "apt-get install g++",
    }
    assert rows["aarch64 emulator"]["fix"] == "apt-get install qemu-user"
    assert rows["aarch64 TVM runtime"]["fix"] == "ember runtime fetch --arch aarch64"
    assert rows[f"{host_arch()} TVM cuda runtime module (cuda bundles)"]["fix"] == "apt-get install libc-bin"  # no ldd
    r = CliRunner().invoke(cli, ["doctor"])
    assert r.exit_code == 0 and "TVM cuda codegen" in r.stdout and "onnxruntime" in r.stdout


def test_verify_mismatch_fails_naming_the_output_and_keeps_the_bundle(model_file, tmp_path, monkeypatch):
    import ember.backends.verify as verify_module

    real = verify_module._onnxruntime
    monkeypatch.setattr(verify_module, "_onnxruntime", lambda m, f: [o + (i == 1) for i, o in enumerate(real(m, f))])
    out = tmp_path / "b"
    r = CliRunner().invoke(cli, ["compile", str(model_file), "-o", str(out), "--verify"])
    assert r.exit_code == 2, r.output
    assert "ember: error: --verify: output 'pooled' differs from onnxruntime by up to 1" in r.stderr
    assert f"the bundle is written: {out}/" in r.stderr and (out / "model.so").exists()


def test_verify_without_qemu_says_why_and_keeps_the_bundle(model_file, tmp_path):
    out = tmp_path / "b"
    no_qemu = path_without(tmp_path / "bin", "qemu-aarch64")
    r = ember_env("compile", str(model_file), "-t", "aarch64-linux-gnu", "-o", str(out), "--verify", PATH=no_qemu)
    assert_one_line_error(r, "--verify: qemu-aarch64 is not installed", "the bundle is written")
    assert (out / "metadata.json").exists()


def test_standalone_without_the_cross_compiler_writes_nothing(model_file, tmp_path):
    out = tmp_path / "b"
    no_gxx = path_without(tmp_path / "bin", "aarch64-linux-gnu-g++")
    r = ember_env("compile", str(model_file), "-t", "aarch64-linux-gnu", "-o", str(out), "--standalone", PATH=no_gxx)
    assert_one_line_error(r, "aarch64-linux-gnu-g++ is not installed", "apt-get install g++-aarch64-linux-gnu")
    assert not out.exists()


@needs_arm
def test_emulate_without_qemu(arm_bundle, x_input, tmp_path):
    no_qemu = path_without(tmp_path / "bin", "qemu-aarch64")
    r = ember_env("run", str(arm_bundle), "--input", x_input, "--emulate", PATH=no_qemu)
    assert_one_line_error(r, "qemu-aarch64 is not installed", "apt-get install qemu-user")


@needs_arm
def test_model_so_of_the_wrong_architecture(host_bundle, arm_bundle, x_input, tmp_path):
    """A bundle whose metadata claims another CPU than its model.so: refused before loading or emulating it."""
    arm_as_host = _copy_with_meta(arm_bundle, tmp_path / "a", name="host", arch=host_arch())
    r = ember("run", str(arm_as_host), "--input", x_input)
    assert_one_line_error(r, f"'model.so' is built for aarch64, not {host_arch()}")
    host_as_arm = _copy_with_meta(host_bundle, tmp_path / "h", name="aarch64-linux-gnu", arch="aarch64")
    r = ember("run", str(host_as_arm), "--input", x_input, "--emulate")
    assert_one_line_error(r, f"'model.so' is built for {host_arch()}, not aarch64", "qemu-aarch64 cannot run it")


@pytest.mark.parametrize("damage", ["missing-metadata", "tampered-library", "truncated-metadata"])
def test_damaged_bundles_fail_in_one_line(host_bundle, x_input, tmp_path, damage):
    bundle = shutil.copytree(host_bundle, tmp_path / "b")
    if damage == "missing-metadata":
        (bundle / "metadata.json").unlink()
    elif damage == "tampered-library":
        with open(bundle / "model.so", "ab") as f:
            f.write(b"\0")
    else:
        (bundle / "metadata.json").write_text((host_bundle / "metadata.json").read_text()[:100])
    needle = {"missing-metadata": "metadata.json is missing", "tampered-library": "sha256"}.get(damage, "valid JSON")
    assert_one_line_error(ember("run", str(bundle), "--input", x_input), needle)


def test_runtime_fetch_refresh_downloads_again(monkeypatch, tmp_path):
    import ember.backends.runtime as runtime

    calls = []
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(runtime, "fetch", lambda arch, refresh=False: calls.append((arch, refresh)) or tmp_path)
    r = CliRunner().invoke(cli, ["runtime", "fetch", "--arch", "aarch64", "--refresh"])
    assert r.exit_code == 0 and calls == [("aarch64", True)] and str(tmp_path) in r.stdout
