"""FileCheck tests: each tests/filecheck/*.ir holds its pipeline (`// RUN: passes`), its input IR and
`// CHECK:` lines; the output of the pipeline must satisfy them, and must compute what the input did."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ember import ir
from ember.passes import PassManager

CASES = sorted((Path(__file__).parent.parent / "filecheck").glob("*.ir"))
FILECHECK = shutil.which("filecheck") or str(Path(sys.executable).parent / "filecheck")


def pipeline_of(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("// RUN:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{path.name} has no RUN line")


def random_inputs(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {
        v.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in v.shape]).astype(np.float32)
        for v in graph.inputs
    }


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_filecheck(case):
    before = ir.read_ir(case)
    graph = ir.read_ir(case)
    PassManager.from_spec(pipeline_of(case), verify_each=True).run(graph)
    out = ir.print_graph(graph)
    r = subprocess.run([FILECHECK, str(case)], input=out, capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n--- output ---\n{out}"
    feeds = random_inputs(before)
    want, got = ir.interpret(before, feeds), ir.interpret(graph, feeds)
    assert list(want) == list(got)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
