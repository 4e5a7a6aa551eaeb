"""Ember IR: graphs, values and nodes, the op registry, the verifier and the interpreter."""

from ember.ir import ops  # noqa: F401  (registers every op)
from ember.ir.graph import Dim, Graph, Node, Shape, Value
from ember.ir.interpreter import interpret
from ember.ir.parser import parse_graph, read_ir
from ember.ir.printer import print_graph
from ember.ir.verifier import verify

__all__ = ["Dim", "Graph", "Node", "Shape", "Value", "interpret", "parse_graph", "print_graph", "read_ir", "verify"]
