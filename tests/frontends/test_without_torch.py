"""Ember without torch: with `import torch` failing as it does when torch is not installed, ember imports, compiles
and runs an ONNX model, and a .pt2 file is one EmberError naming the extra to install. Runs with or without
torch installed (torch is blocked in a child process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None

sys.meta_path.insert(0, BlockTorch())
"""

WORK = """
import numpy as np
from onnx import helper

import ember
from ember.models.blocks import make_model

model = make_model(
    [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
    [("x", [1, 2, 5, 5])], [("y", None)], {"w": np.ones((3, 2, 3, 3), np.float32)},
)
art = ember.compile(model, "host")
y = art.run({"x": np.ones((1, 2, 5, 5), np.float32)})["y"]
assert y.shape == (1, 3, 5, 5) and y[0, 0, 2, 2] == 18.0, y[0, 0]
try:
    ember.compile("model.pt2")
except ember.EmberError as e:
    assert "need torch" in str(e) and '.[torch]' in str(e), e
else:
    raise AssertionError("a .pt2 file compiled without torch")
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("ok without torch")
"""


def test_ember_works_without_torch():
    script = BLOCK_TORCH + textwrap.dedent(WORK)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok without torch" in r.stdout, r.stderr[-2000:]
