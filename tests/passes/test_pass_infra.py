"""Pass infrastructure: plugins (files and their failures), the pattern API on a real model, instruments,
and the opt/passes/inspect commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from ember import EmberError, ir
from ember.frontends.onnx import load
from ember.passes import PassManager, all_passes, parse_pipeline
from ember.passes.plugins import load_plugin
from tests.conftest import assert_close, make_model, ort_run, random_feeds

ROOT = Path(__file__).parent.parent.parent
PLUGIN = ROOT / "examples" / "fold_mul_into_conv.py"
EMBER = str(Path(sys.executable).parent / "ember")


def ember(*args, cwd=None):
    return subprocess.run([EMBER, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def conv_mul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "s"], ["m"]),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
        "s": rng.uniform(0.5, 2, (8, 1, 1)).astype(np.float32),
    }
    return make_model(nodes, [("x", [1, 3, 16, 16])], [("y", [1, 8, 16, 16])], inits)


def test_plugin_pass_folds_mul_into_conv():
    assert "fold-mul-into-conv" in load_plugin(PLUGIN)
    model = conv_mul_model()
    graph = load(model)
    PassManager.from_spec("canonicalize,fold-mul-into-conv", verify_each=True).run(graph)
    assert graph.op_counts() == {"conv2d": 1, "relu": 1}
    feeds = random_feeds(model)
    assert_close(ir.interpret(graph, feeds), ort_run(model, feeds))


def test_plugin_through_the_cli(tmp_path):
    onnx.save(conv_mul_model(), str(tmp_path / "m.onnx"))
    r = ember(
        "opt",
        str(tmp_path / "m.onnx"),
        "--pass-plugin",
        str(PLUGIN),
        "--passes",
        "canonicalize,fold-mul-into-conv",
        "--print-ir-after-change",
    )
    assert r.returncode == 0, r.stderr
    assert "IR dump after fold-mul-into-conv" in r.stderr and "mul(" not in r.stdout
    r = ember("passes", "--pass-plugin", str(PLUGIN))
    assert "fold-mul-into-conv" in r.stdout and "fold_mul_into_conv.py" in r.stdout
    assert "fold-mul-into-conv" not in ember("passes").stdout  # plugins load only when named


BAD_PLUGINS = {
    "raises.py": ("raise RuntimeError('boom')\n", "failed to import at line 1: RuntimeError: boom"),
    "syntax.py": ("def broken(:\n", "SyntaxError"),
    "empty.py": ("x = 1\n", "registered no pass"),
    "fails.py": (
        "import ember.passes\n"
        "@ember.passes.register('explode', description='raises')\n"
        "def explode(graph):\n    raise ValueError('bad pass')\n",
        "pass 'explode' raised ValueError: bad pass",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_PLUGINS))
def test_bad_plugins_fail_with_the_plugin_file_named(name, tmp_path):
    source, message = BAD_PLUGINS[name]
    plugin = tmp_path / name
    plugin.write_text(source)
    onnx.save(conv_mul_model(), str(tmp_path / "m.onnx"))
    passes = "explode" if name == "fails.py" else "canonicalize"
    r = ember(
        "compile",
        str(tmp_path / "m.onnx"),
        "--pass-plugin",
        str(plugin),
        "--passes",
        passes,
        "-o",
        str(tmp_path / "out"),
    )
    assert r.returncode == 2, r.stderr
    assert str(plugin) in r.stderr and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_pass_lists_close_matches():
    with pytest.raises(EmberError, match="did you mean fold-constants"):
        parse_pipeline("fold-constant")


def test_registry_and_opt_levels():
    names = {p.name for p in all_passes()}
    assert {"canonicalize", "cse", "dce", "fold-constants", "fuse-conv-bn"} <= names
    assert all(p.description for p in all_passes())
    assert parse_pipeline("-O0") == [] and "fuse-conv-bn" in parse_pipeline(2)


def test_records_time_and_node_counts():
    graph = load(conv_mul_model())
    pm = PassManager.from_spec("canonicalize,fold-constants")
    pm.run(graph)
    assert [r.name for r in pm.records] == ["canonicalize", "fold-constants"]
    assert all(r.seconds >= 0 and r.nodes_before >= r.nodes_after for r in pm.records)


def test_opt_round_trip_is_exact(tmp_path):
    onnx.save(conv_mul_model(), str(tmp_path / "m.onnx"))
    assert ember("opt", str(tmp_path / "m.onnx"), "-O2", "-o", str(tmp_path / "a.ir")).returncode == 0
    assert ember("opt", str(tmp_path / "a.ir"), "--passes", "", "-o", str(tmp_path / "b.ir")).returncode == 0
    a = (tmp_path / "a.ir").read_text().replace('"a.npz"', '"X"')
    b = (tmp_path / "b.ir").read_text().replace('"b.npz"', '"X"')
    assert a == b
    with np.load(tmp_path / "a.npz") as wa, np.load(tmp_path / "b.npz") as wb:
        assert wa.files == wb.files and all(np.array_equal(wa[k], wb[k]) for k in wa.files)


def test_opt_to_onnx_runs_in_onnxruntime(tmp_path):
    model = conv_mul_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    r = ember("opt", str(tmp_path / "m.onnx"), "-O2", "--pass-plugin", str(PLUGIN), "-o", str(tmp_path / "o.onnx"))
    assert r.returncode == 0, r.stderr
    feeds = random_feeds(model)
    assert_close(ort_run(str(tmp_path / "o.onnx"), feeds), ort_run(model, feeds))


def test_dump_ir_and_time_passes(tmp_path):
    onnx.save(conv_mul_model(), str(tmp_path / "m.onnx"))
    r = ember(
        "compile",
        str(tmp_path / "m.onnx"),
        "--dump-ir",
        str(tmp_path / "dump"),
        "--time-passes",
        "-o",
        str(tmp_path / "b"),
    )
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert files[0] == "00-input.ir" and "01-after-canonicalize.ir" in files
    assert files[-1].endswith("-lowered-relax.py")
    relax_text = (tmp_path / "dump" / files[-1]).read_text()
    assert "R.call_tir(cls.conv2d, (x," in relax_text  # the 3-channel stem conv reads x itself (stem.py)
    for f in files:
        if f.endswith(".ir"):
            ir.verify(ir.read_ir(tmp_path / "dump" / f))
    assert "fold-constants" in r.stderr and "nodes before" in r.stderr


@pytest.mark.parametrize(
    "fmt, needle", [("text", "conv2d("), ("json", '"op": "conv2d"'), ("dot", "digraph"), ("html", "<svg")]
)
def test_inspect_formats(fmt, needle, tmp_path):
    onnx.save(conv_mul_model(), str(tmp_path / "m.onnx"))
    r = ember("inspect", str(tmp_path / "m.onnx"), "--format", fmt)
    assert r.returncode == 0 and needle in r.stdout
    if fmt == "json":
        assert len(json.loads(r.stdout)["nodes"]) == 3


def test_malformed_ir_on_the_cli(tmp_path):
    (tmp_path / "bad.ir").write_text("graph @g(%x: f32[2]) -> (%x) {\n  %y = relu(%x :\n}\n")
    r = ember("opt", str(tmp_path / "bad.ir"), "-o", str(tmp_path / "out.ir"))
    assert r.returncode == 2 and f"{tmp_path / 'bad.ir'}:2:" in r.stderr and "expected" in r.stderr
    assert not (tmp_path / "out.ir").exists()


def test_installed_packages_register_through_entry_points(tmp_path):
    site = tmp_path / "site"
    (site / "acme_passes-1.0.dist-info").mkdir(parents=True)
    (site / "acme_passes.py").write_text(
        "import ember.passes\n"
        "@ember.passes.register('acme-noop', description='does nothing, from an installed package')\n"
        "def noop(graph):\n    return False\n"
    )
    info = site / "acme_passes-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-passes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ember.passes]\nacme = acme_passes\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    r = subprocess.run([EMBER, "passes"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "acme-noop" in r.stdout and "entry point acme" in r.stdout
