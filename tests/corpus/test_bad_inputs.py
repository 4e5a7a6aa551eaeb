"""Every case in tests/corpus/bad/ through the CLI and the Python API: one line naming the file (and node or
op), exit status 2, no traceback, nothing written, an existing output left byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ember
from ember.cli.main import cli
from ember.driver import import_model
from ember.passes import PassManager
from ember.passes.plugins import load_plugin
from tests.conftest import load_repo_script

CORPUS = Path(__file__).parent / "bad"
CASES = json.loads((CORPUS / "cases.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A copy of the corpus, plus the cases too big to commit."""
    root = tmp_path_factory.mktemp("corpus") / "bad"
    shutil.copytree(CORPUS, root)
    (root / "nested.onnx").write_bytes(load_repo_script("scripts/make_bad_corpus.py").nested_model(10_000))
    return root


@pytest.fixture(scope="module")
def bundle(corpus) -> Path:
    """A host bundle of small.onnx for the `run` cases, compiled once."""
    out = corpus / "bundle"
    if not out.exists():
        ember.compile(corpus / "small.onnx", "host").save(out)
    return out


def _existing_output(out: Path) -> dict[str, bytes]:
    """An earlier result at OUT: a bundle folder for compile; a file otherwise (an .ir with its .npz)."""
    if out.suffix:
        files = [out, out.with_suffix(".npz")] if out.suffix == ".ir" else [out]
        for f in files:
            f.write_bytes(b"earlier output " + f.suffix.encode() + b"\n")
        return _contents(files)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "metadata.json").write_text('{"format": 1}\n')
    (out / "model.so").write_bytes(b"\x7fELF earlier bundle")
    return _contents(list(out.iterdir()))


def _contents(files: list[Path]) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in files}


def _run_cli(case: dict, corpus: Path, monkeypatch) -> str:
    monkeypatch.chdir(corpus)
    out = Path(case.get("out") or ("out.txt" if case["args"][0] == "inspect" else "out"))
    before = _existing_output(corpus / out) if "{out}" in case["args"] else {}
    args = [a.format(file=case["file"], out=out) for a in case["args"]]
    r = CliRunner().invoke(cli, args, env=case["env"])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ember: error: "), r.stderr
    assert "Traceback" not in r.output and r.stdout == "", r.stdout
    for needle in case["expect"]:
        assert needle in lines[0], (needle, lines[0])
    assert _contents([Path(p) for p in before]) == before
    assert not [p.name for p in corpus.iterdir() if p.name.startswith(".out")]
    return lines[0].removeprefix("ember: error: ")


def _call_api(case: dict) -> None:
    """What a library user calls for the case's command: compile, load and run, a pass pipeline, or save."""
    args, file = case["args"], case["file"]
    plugins = [file] if "--pass-plugin" in args else []
    passes = args[args.index("--passes") + 1] if "--passes" in args else 2
    if case["api"] == "run":
        ember.load("bundle").run({"x": np.load(file)})
    elif case["api"] == "save":
        ember.load("bundle").save(args[-1].format(file=file))
    elif case["api"] == "opt":
        for plugin in plugins:
            load_plugin(plugin)
        PassManager.from_spec(passes).run(import_model(args[1].format(file=file)))
    else:
        dump = args[args.index("--dump-ir") + 1].format(file=file) if "--dump-ir" in args else None
        ember.compile(args[1].format(file=file), "host", pass_plugins=plugins, passes=passes, dump_ir=dump)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_cli_and_api(case, corpus, monkeypatch, request):
    if "bundle" in case["args"] or case["api"] == "save":
        request.getfixturevalue("bundle")
    message = _run_cli(case, corpus, monkeypatch)
    if case["api"] == "none":  # the CLI's own output files (-o of opt, run, inspect): no library call writes them
        return
    for key, value in case["env"].items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ember.EmberError) as err:
        _call_api(case)
    if case["api"] == "run":  # the CLI knows which .npy file held the input; the API was given an array
        assert message.endswith(f"{case['file']}: {err.value}"), (message, str(err.value))
    else:
        assert str(err.value) == message


def test_every_corpus_file_has_a_case():
    named = {c["file"] for c in CASES} - {"nested.onnx"} | {"small.onnx", "weights.bin", "cases.json"}
    assert {p.name for p in CORPUS.iterdir()} == named


def test_debug_shows_the_traceback_for_a_corpus_case(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    r = CliRunner().invoke(cli, ["--debug", "inspect", "undefined_value.ir"])
    assert r.exit_code == 2 and "Traceback" in r.stderr
