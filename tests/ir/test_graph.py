"""Ember IR core: construction and type inference, use-def queries, mutation, ordering, the verifier."""

from __future__ import annotations

import numpy as np
import pytest

from ember import EmberError, ir
from ember.ir.ops import all_schemas, get_schema


def small_graph():
    g = ir.Graph("net")
    x = g.add_input("x", ["N", 3, 8, 8])
    w = g.add_constant(np.ones((4, 3, 3, 3), np.float32), "w")
    c = g.emit("conv2d", x, w, pads=[1, 1, 1, 1], name="conv")
    r = g.emit("relu", c, name="relu")
    p = g.emit("global_avg_pool", r, name="pool")
    g.outputs = [p]
    return g


def test_type_inference_keeps_symbolic_dims():
    g = small_graph()
    assert g.value("conv").shape == ("N", 4, 8, 8)
    assert g.value("pool").shape == ("N", 4, 1, 1) and g.value("pool").dtype == "f32"
    ir.verify(g)


def test_concat_takes_a_dim_any_operand_knows():
    """A class token expanded to a run-time shape ([?,1,D]) joined with patches [N,16,D] is [N,17,D]."""
    g = ir.Graph()
    tokens = g.emit("expand", g.add_constant(np.zeros((1, 1, 8), np.float32)), g.emit("shape", g.add_input("n", [3])))
    joined = g.emit("concat", tokens, g.add_input("patches", ["N", 16, 8]), axis=1)
    assert tokens.shape == ("?", "?", "?") and joined.shape == ("N", "?", 8)


def test_use_def_queries_and_replace_all_uses():
    g = small_graph()
    conv, relu = g.node("conv"), g.node("relu")
    assert conv.output.users == [relu] and conv.output.producer is conv
    s = g.emit("sigmoid", conv.output, name="sig")
    g.replace_all_uses(relu.output, s)
    assert g.node("pool").inputs[0] is s and not relu.output.uses
    g.remove_node(relu)
    g.sort()
    ir.verify(g)
    assert [n.name for n in g.nodes] == ["conv", "sig", "pool"]


def test_sort_orders_by_dependencies_with_networkx():
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(EmberError, match="used before it is defined"):
        ir.verify(g)
    g.sort()
    ir.verify(g)
    assert [n.name for n in g.nodes] == ["conv", "relu", "pool"]


def test_removing_a_used_node_is_refused():
    g = small_graph()
    with pytest.raises(EmberError, match="still used"):
        g.remove_node(g.node("conv"))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda g: g.node("relu").attrs.update(alpha=1.0), r"node 'relu' \(relu\).*unknown attribute 'alpha'"),
        (lambda g: g.node("conv").attrs.update(strides=[1, 1]), r"node 'conv'.*attributes are not normalized"),
        (lambda g: setattr(g.value("relu"), "shape", (1, 2)), "inference gives"),
        (lambda g: g.node("pool").inputs.__setitem__(0, g.value("conv")), "use list"),
        (lambda g: setattr(g, "outputs", [ir.Value("ghost", [1], "f32")]), "never defined"),
    ],
)
def test_verifier_names_the_first_broken_invariant_and_node(break_it, message):
    g = small_graph()
    break_it(g)
    with pytest.raises(EmberError, match=message):
        ir.verify(g)


def test_verifier_finds_cycles():
    g = small_graph()
    relu, conv = g.node("relu"), g.node("conv")
    g.set_input(conv, 0, relu.output)
    with pytest.raises(EmberError, match="cycle|before it is defined"):
        ir.verify(g)
    with pytest.raises(EmberError, match="cycle"):
        g.sort()


def test_bad_nodes_are_rejected_with_node_and_op():
    g = small_graph()
    with pytest.raises(EmberError, match=r"node 'bad' \(conv2d\).*disagree"):
        g.emit("conv2d", g.value("x"), g.add_constant(np.ones((4, 5, 3, 3), np.float32)), name="bad")
    with pytest.raises(EmberError, match="unknown attribute 'stride'"):
        g.emit("conv2d", g.value("x"), g.value("w"), stride=[2, 2])
    with pytest.raises(EmberError, match="expects 2..3 operands"):
        g.emit("conv2d", g.value("x"))
    with pytest.raises(EmberError, match="did you mean relu"):
        g.emit("rellu", g.value("x"))
    with pytest.raises(EmberError, match="do not broadcast"):
        g.emit("add", g.value("conv"), g.add_constant(np.ones((5,), np.float32)))


def test_every_op_has_a_doc_and_a_reference():
    for name, schema in all_schemas().items():
        assert schema.doc, name
        assert schema.reference is not None, name
    assert get_schema("conv2d").attrs["group"].default == 1


def test_duplicate_names_are_made_unique_and_networkx_view():
    g = ir.Graph()
    x = g.add_input("x", [2, 2])
    a = g.emit("relu", x, name="act")
    b = g.emit("relu", a, name="act")
    assert a.name != b.name
    g.outputs = [b]
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 2 and nxg.number_of_edges() == 1
    with pytest.raises(EmberError, match="duplicate value name"):
        g.add_input("x", [1])


def test_interpreter_runs_and_checks_inputs():
    g = small_graph()
    out = ir.interpret(g, {"x": np.ones((2, 3, 8, 8), np.float32)})
    assert out["pool"].shape == (2, 4, 1, 1)
    with pytest.raises(EmberError, match="missing input 'x'"):
        ir.interpret(g, {})
