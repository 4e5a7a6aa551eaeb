"""Every case in tests/corpus/bad/ through the CLI and the Python API: one line naming the file (and node or
op), exit status 2, no traceback, nothing written, an existing output left byte for byte as it was."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import ember
from ember.cli.main import cli

CORPUS = Path(__file__).parent / "bad"
CASES = json.loads((CORPUS / "cases.json").read_text())


def _generator():
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_bad_corpus.py"
    spec = importlib.util.spec_from_file_location("make_bad_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A copy of the corpus, plus the cases too big to commit."""
    root = tmp_path_factory.mktemp("corpus") / "bad"
    shutil.copytree(CORPUS, root)
    (root / "nested.onnx").write_bytes(_generator().nested_model(10_000))
    return root


def _existing_output(out: Path) -> dict[str, bytes]:
    """An earlier result at OUT: a bundle folder for compile, a file for inspect."""
    if out.suffix == ".txt":
        out.write_text("earlier output\n")
        return {out.name: out.read_bytes()}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "metadata.json").write_text('{"format": 1}\n')
    (out / "model.so").write_bytes(b"\x7fELF earlier bundle")
    return _contents(out)


def _contents(out: Path) -> dict[str, bytes]:
    return {out.name: out.read_bytes()} if out.is_file() else {p.name: p.read_bytes() for p in out.iterdir()}


def _run_cli(case: dict, corpus: Path, monkeypatch) -> tuple[str, Path]:
    monkeypatch.chdir(corpus)
    out = Path("out.txt" if case["args"][0] == "inspect" else "out")
    before = _existing_output(corpus / out) if "{file}/" not in " ".join(case["args"]) else {}
    args = [a.format(file=case["file"], out=out) for a in case["args"]]
    r = CliRunner().invoke(cli, args, env=case["env"])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ember: error: "), r.stderr
    assert "Traceback" not in r.output and r.stdout == "", r.stdout
    for needle in case["expect"]:
        assert needle in lines[0], (needle, lines[0])
    if before:
        assert _contents(corpus / out) == before
    assert not [p.name for p in corpus.iterdir() if p.name.startswith(".out")]
    return lines[0].removeprefix("ember: error: "), out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_cli_and_api(case, corpus, monkeypatch):
    message, _ = _run_cli(case, corpus, monkeypatch)
    if case["api"] == "none":
        return
    for key, value in case["env"].items():
        monkeypatch.setenv(key, value)
    args = case["args"]
    plugins = [case["file"]] if "--pass-plugin" in args else []
    with pytest.raises(ember.EmberError) as err:
        ember.compile(args[1].format(file=case["file"]), "host", pass_plugins=plugins)
    assert str(err.value) == message


def test_every_corpus_file_has_a_case():
    named = {c["file"] for c in CASES} - {"nested.onnx"} | {"small.onnx", "weights.bin", "cases.json"}
    assert {p.name for p in CORPUS.iterdir()} == named


def test_debug_shows_the_traceback_for_a_corpus_case(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    r = CliRunner().invoke(cli, ["--debug", "inspect", "undefined_value.ir"])
    assert r.exit_code == 2 and "Traceback" in r.stderr
