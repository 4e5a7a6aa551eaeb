"""Write tests/corpus/bad/: small malformed models, IR texts and plugins, and cases.json saying how each fails.

Every case must fail with one `ember: error:` line naming its file (and node or op where there is one), exit
status 2 and nothing written. Large cases (a graph nested 10,000 deep) and the host bundle that `run` cases use
are built by the test. A case's `out` is the output path its `{out}` stands for; an earlier output there must
survive the failure byte for byte.
Run from the repository root: `.venv/bin/python scripts/make_bad_corpus.py`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "bad"
COMPILE = ["compile", "{file}", "-o", "{out}"]
INSPECT = ["inspect", "{file}", "-o", "{out}"]


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(inits),
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def small_model() -> onnx.ModelProto:
    """x[1,4] -> MatMul(w) -> Add(b) -> Relu -> y[1,3]: the valid model the byte-level cases damage."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.random((4, 3), dtype=np.float32), "w")
    b = numpy_helper.from_array(rng.random(3, dtype=np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["z"], name="bias"),
        helper.make_node("Relu", ["z"], ["y"], name="act"),
    ]
    return _model(nodes, [("x", [1, 4])], [("y", [1, 3])], [w, b])


def nested_model(depth: int) -> bytes:
    """An If node whose branch holds an If node, `depth` deep, serialized by hand (protobuf's own encoder
    refuses such depth, and the file is what a hostile producer would write): each level wraps the one
    inside it in a head and a tail, joined once at the end."""
    core = helper.make_graph(
        [], "g0", [], [helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
    ).SerializeToString()
    size, heads, tails = len(core), [], []
    for level in range(1, depth + 1):
        attr_head = _field(1, b"then_branch") + _tag(6) + _varint(size)
        attr_tail = _varint(20 << 3) + _varint(5)
        attr_size = len(attr_head) + size + len(attr_tail)
        node_head = b"".join(
            _field(k, v) for k, v in ((1, b"c"), (2, b"o%d" % level), (3, b"if%d" % level), (4, b"If"))
        )
        node_head += _tag(5) + _varint(attr_size)
        node_size = len(node_head) + attr_size
        graph_head = _tag(1) + _varint(node_size)
        graph_tail = _field(2, b"g%d" % level) + _field(12, _value_info(f"o{level}"))
        heads.append(graph_head + node_head + attr_head)
        tails.append(attr_tail + graph_tail)
        size = len(graph_head) + node_size + len(graph_tail)
    model = helper.make_model(helper.make_graph([], "m", [], []), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.ClearField("graph")
    return model.SerializeToString() + _tag(7) + _varint(size) + b"".join(reversed(heads)) + core + b"".join(tails)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | 2)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str) -> bytes:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]).SerializeToString()


def damaged_bytes() -> dict[str, bytes]:
    data = small_model().SerializeToString()
    flipped = bytearray(data)
    for i in range(0, len(flipped), 7):
        flipped[i] ^= 0xFF
    return {
        "truncated.onnx": data[: len(data) // 2],
        "bitflip.onnx": bytes(flipped),
        "random.onnx": np.random.default_rng(1).bytes(512),
        "empty.onnx": b"",
        "bad_utf8_op.onnx": data.replace(b"Relu", b"\xcdelu"),
    }


def graph_cases() -> dict[str, onnx.ModelProto]:
    """Models that parse as protobuf but are wrong as graphs."""
    x = [("x", [2, 3])]
    y = [("y", [2, 3])]
    nan = numpy_helper.from_array(np.array([[1, np.nan, 3]] * 2, np.float32), "nan_w")
    short = TensorProto(name="short_w", data_type=TensorProto.FLOAT, dims=[2, 3])
    short.raw_data = np.ones(4, np.float32).tobytes()
    untyped = _model([helper.make_node("Relu", ["x"], ["y"], name="act")], x, y)
    untyped.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED
    return {
        "untyped_input.onnx": untyped,
        "missing_operand.onnx": _model([helper.make_node("MatMul", ["", "x"], ["y"], name="mm_half")], x, y),
        "short_initializer.onnx": _model(
            [helper.make_node("Add", ["x", "short_w"], ["y"], name="add_short")], x, y, [short]
        ),
        "cycle.onnx": _model(
            [
                helper.make_node("Add", ["x", "b"], ["a"], name="loop_a"),
                helper.make_node("Relu", ["a"], ["b"], name="loop_b"),
                helper.make_node("Relu", ["a"], ["y"], name="out"),
            ],
            x,
            y,
        ),
        "dangling.onnx": _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")], x, y),
        "duplicate_names.onnx": _model(
            [
                helper.make_node("Relu", ["x"], ["t"], name="first"),
                helper.make_node("Sigmoid", ["x"], ["t"], name="second"),
                helper.make_node("Relu", ["t"], ["y"], name="out"),
            ],
            x,
            y,
        ),
        "unknown_op.onnx": _model([helper.make_node("FrobnicateOp", ["x"], ["y"], name="frob")], x, y),
        "unknown_domain.onnx": _model(
            [helper.make_node("Relu", ["x"], ["y"], name="acme_relu", domain="com.acme")], x, y, domains=["com.acme"]
        ),
        "wrong_attr_type.onnx": _model([helper.make_node("Softmax", ["x"], ["y"], name="soft", axis="last")], x, y),
        "shape_mismatch.onnx": _model(
            [helper.make_node("Add", ["x", "z"], ["y"], name="bad_add")], [("x", [2, 3]), ("z", [4, 5])], y
        ),
        "nan_weights.onnx": _model([helper.make_node("Add", ["x", "nan_w"], ["y"], name="add_nan")], x, y, [nan]),
    }


def external_cases() -> dict[str, onnx.ModelProto]:
    def ext(location: str, length: int) -> onnx.ModelProto:
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3])
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
            w.external_data.add(key=key, value=value)
        return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add_w")], [("x", [2, 3])], [("y", [2, 3])], [w])

    return {"external_escape.onnx": ext("../../etc/passwd", 24), "external_too_large.onnx": ext("weights.bin", 4096)}


IR_TEXTS = {
    "undefined_value.ir": "graph @g(%x: f32[2]) -> (%y) {\n  %y = relu(%nope) : f32[2]\n  return %y\n}\n",
    "unterminated.ir": 'graph @g(%x: f32[2]) -> (%y) {\n  %y = relu(%x) : f32[2] loc("act\n',
    "bad_type.ir": "graph @g(%x: q7[2]) -> (%x) {\n  return %x\n}\n",
    "unknown_ir_op.ir": "graph @g(%x: f32[2]) -> (%y) {\n  %y = frobnicate(%x) : f32[2]\n  return %y\n}\n",
    "weights_escape.ir": (
        'graph @g(%x: f32[2]) -> (%y) {\n  weights "../../etc/passwd.npz"\n  %y = relu(%x) : f32[2]\n  return %y\n}\n'
    ),
    "symbolic_const.ir": "graph @g(%x: f32[2]) -> (@c) {\n  @c = const dense<[1.0, 2.0]> : f32[N]\n  return @c\n}\n",
    "binary.ir": "graph @g(\x00\x01\x02) {}\n",
}

PLUGINS = {  # written as ruff formats them, so a format run over tests/ leaves them as generated
    "plugin_raises.py": 'raise RuntimeError("plugin exploded on import")\n',
    "plugin_hangs.py": "while True:\n    pass\n",
    "plugin_pass_hangs.py": (
        "import ember.passes\n\n\n"
        '@ember.passes.register("spin-forever", description="never returns")\n'
        "def spin_forever(graph):\n    while True:\n        pass\n"
    ),
    "plugin_pass_raises.py": (
        "import ember.passes\n\n\n"
        '@ember.passes.register("explode", description="rewrites half the graph, then raises")\n'
        'def explode(graph):\n    graph.name = "half-done"\n    raise RuntimeError("pass exploded midway")\n'
    ),
}

ARRAYS = {"input.npy": np.ones((1, 4), np.float32), "wrong_shape.npy": np.ones((2, 4), np.float32)}


def cases() -> list[dict]:
    """Per case: the files it needs, the CLI arguments, the substrings its one error line must hold."""

    def c(name, args, expect, api="compile", env=None, out=None):
        case = {"name": name, "args": args, "expect": expect, "api": api, "env": env or {}}
        return case | ({"out": out} if out else {})

    def opt(pass_name):
        return ["opt", "small.onnx", "--pass-plugin", "{file}", "--passes", pass_name, "-o", "{out}"]

    run = ["run", "bundle", "--input", "x={file}", "-o"]

    table = [
        c("truncated.onnx", COMPILE, ["truncated.onnx", "not a readable ONNX model"]),
        c("bitflip.onnx", COMPILE, ["bitflip.onnx"]),
        c("random.onnx", COMPILE, ["random.onnx"]),
        c("empty.onnx", COMPILE, ["empty.onnx"]),
        c("bad_utf8_op.onnx", COMPILE, ["bad_utf8_op.onnx", "UTF-8"]),
        c("cycle.onnx", COMPILE, ["cycle.onnx", "cycle"]),
        c("dangling.onnx", COMPILE, ["dangling.onnx", "add_ghost", "ghost"]),
        c("duplicate_names.onnx", COMPILE, ["duplicate_names.onnx", "'t'", "second"]),
        c("unknown_op.onnx", COMPILE, ["unknown_op.onnx", "FrobnicateOp", "frob"]),
        c("unknown_domain.onnx", COMPILE, ["unknown_domain.onnx", "com.acme.Relu", "acme_relu"]),
        c("wrong_attr_type.onnx", COMPILE, ["wrong_attr_type.onnx", "soft", "Softmax", "axis"]),
        c("shape_mismatch.onnx", COMPILE, ["shape_mismatch.onnx", "bad_add", "Add"]),
        c("missing_operand.onnx", COMPILE, ["missing_operand.onnx", "mm_half", "MatMul", "required operand 0"]),
        c("short_initializer.onnx", COMPILE, ["short_initializer.onnx", "add_short", "'short_w'"]),
        c("untyped_input.onnx", COMPILE, ["untyped_input.onnx", "'x'", "element type"]),
        c("nan_weights.onnx", COMPILE, ["nan_weights.onnx", "nan_w", "NaN"]),
        c("external_escape.onnx", COMPILE, ["external_escape.onnx", "'w'", "outside the model's folder"]),
        c("external_too_large.onnx", COMPILE, ["external_too_large.onnx", "'w'", "4096 bytes"]),
        c("nested.onnx", COMPILE, ["nested.onnx", "nested too deeply"]),
        c(
            "plugin_raises.py",
            ["compile", "small.onnx", "--pass-plugin", "{file}", "-o", "{out}"],
            ["plugin_raises.py", "plugin exploded"],
        ),
        c(
            "plugin_hangs.py",
            ["compile", "small.onnx", "--pass-plugin", "{file}", "-o", "{out}"],
            ["plugin_hangs.py", "did not finish"],
            env={"EMBER_PLUGIN_TIMEOUT": "1"},
        ),
        c("unwritable-output", ["inspect", "small.onnx", "-o", "{file}/out.txt"], ["small.onnx"], api="none"),
        c(
            "unwritable-bundle",
            ["compile", "small.onnx", "-o", "{file}/bundle"],
            ["small.onnx", "not a folder"],
            api="save",
        ),
        c(
            "plugin_pass_hangs.py",
            opt("spin-forever"),
            ["plugin_pass_hangs.py", "pass 'spin-forever' did not finish within 1 s"],
            api="opt",
            env={"EMBER_PLUGIN_TIMEOUT": "1"},
            out="out.ir",
        ),
        c(
            "plugin_pass_raises.py",
            opt("explode"),
            ["plugin_pass_raises.py", "pass 'explode' raised RuntimeError: pass exploded midway"],
            api="opt",
            out="out.onnx",
        ),
        c(
            "wrong_shape.npy",
            [*run, "{out}"],
            ["wrong_shape.npy: input 'x'", "[1, 4]", "[2, 4]"],
            api="run",
            out="out.npz",
        ),
        c(
            "unwritable-opt",
            ["opt", "{file}", "-o", "{file}/out.ir"],
            ["'small.onnx/out.", "Not a directory"],
            api="none",
        ),
        c("unwritable-run", [*run, "small.onnx/out.npz"], ["'small.onnx/out.npz'", "Not a directory"], api="none"),
        c(
            "unwritable-dump",
            ["compile", "{file}", "--dump-ir", "{file}/dumps", "-o", "{out}"],
            ["IR dump folder 'small.onnx/dumps'", "Not a directory"],
        ),
    ]
    for case in table:
        if case["name"].startswith("unwritable-"):
            case["file"] = "input.npy" if case["name"] == "unwritable-run" else "small.onnx"
    for name in IR_TEXTS:
        table.append(c(name, INSPECT, [name], api="read_ir"))
    for case in table:
        case.setdefault("file", case["name"])
    return table


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in damaged_bytes().items():
        (OUT / name).write_bytes(data)
    for name, model in {**graph_cases(), **external_cases(), "small.onnx": small_model()}.items():
        (OUT / name).write_bytes(model.SerializeToString())
    (OUT / "weights.bin").write_bytes(np.zeros(6, np.float32).tobytes())
    for name, text in {**IR_TEXTS, **PLUGINS}.items():
        (OUT / name).write_text(text)
    for name, array in ARRAYS.items():
        np.save(OUT / name, array)
    (OUT / "cases.json").write_text(json.dumps(cases(), indent=1) + "\n")
    print(f"wrote {len(cases())} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
