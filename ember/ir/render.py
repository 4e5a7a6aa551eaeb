"""Views of a graph for people: JSON, Graphviz DOT, and a self-contained HTML page."""

from __future__ import annotations

import html
import json

import networkx as nx

from ember.ir.graph import Graph, Node
from ember.ir.printer import attr_str, type_str


def to_json(graph: Graph) -> str:
    def val(v):
        return None if v is None else v.name

    data = {
        "name": graph.name,
        "inputs": [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype} for v in graph.inputs],
        "outputs": [v.name for v in graph.outputs],
        "constants": [{"name": c.name, "shape": list(c.shape), "dtype": c.dtype} for c in graph.constants],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": [val(v) for v in n.inputs],
                "outputs": [{"name": o.name, "shape": list(o.shape), "dtype": o.dtype} for o in n.outputs],
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in n.attrs.items()},
            }
            for n in graph.nodes
        ],
    }
    return json.dumps(data, indent=1, default=str)


def _label(n: Node) -> str:
    return f"{n.name}\\n{n.op}\\n" + ", ".join(type_str(o.shape, o.dtype) for o in n.outputs)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz DOT of the dataflow graph built with networkx (inputs and outputs as ellipses)."""
    g = graph.to_networkx()
    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB; node [shape=box, fontname=Helvetica];"]
    by_name = {n.name: n for n in graph.nodes}
    for v in graph.inputs:
        lines.append(
            f"  {_q('in:' + v.name)} [shape=ellipse, label={_q(v.name + chr(92) + 'n' + type_str(v.shape, v.dtype))}];"
        )
    for name in g.nodes:
        lines.append(f"  {_q(name)} [label={_q(_label(by_name[name]))}];")
    for u, v, data in g.edges(data=True):
        lines.append(f"  {_q(u)} -> {_q(v)} [label={_q(data['value'])}];")
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None and v.producer is None and not v.is_const:
                lines.append(f"  {_q('in:' + v.name)} -> {_q(n.name)};")
    for v in graph.outputs:
        lines.append(f"  {_q('out:' + v.name)} [shape=ellipse, label={_q(v.name)}];")
        src = v.producer.name if v.producer is not None else "in:" + v.name
        lines.append(f"  {_q(src)} -> {_q('out:' + v.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_html(graph: Graph) -> str:
    """One self-contained page: nodes laid out in dependency layers, details on hover."""
    g = graph.to_networkx()
    layers = list(nx.topological_generations(g)) if g.number_of_nodes() else []
    by_name = {n.name: n for n in graph.nodes}
    box_w, box_h, gap_x, gap_y = 170, 44, 24, 46
    width = max((len(layer) for layer in layers), default=1) * (box_w + gap_x) + gap_x
    pos = {}
    for row, layer in enumerate(layers):
        x0 = (width - len(layer) * (box_w + gap_x) + gap_x) / 2
        for col, name in enumerate(sorted(layer, key=lambda s: list(by_name).index(s))):
            pos[name] = (x0 + col * (box_w + gap_x), gap_y + row * (box_h + gap_y))
    height = gap_y + len(layers) * (box_h + gap_y)
    parts = []
    for u, v in g.edges():
        (x1, y1), (x2, y2) = pos[u], pos[v]
        parts.append(f'<line x1="{x1 + box_w / 2}" y1="{y1 + box_h}" x2="{x2 + box_w / 2}" y2="{y2}"/>')
    for name, (x, y) in pos.items():
        n = by_name[name]
        ins = ", ".join("none" if v is None else v.name for v in n.inputs)
        attrs = "\n".join(f"  {k} = {attr_str(v)}" for k, v in n.attrs.items())
        outs = "\n".join(f"  {o.name} : {type_str(o.shape, o.dtype)}" for o in n.outputs)
        tip = html.escape(
            f"{n.name} ({n.op})\ninputs: {ins}\noutputs:\n{outs}" + (f"\nattributes:\n{attrs}" if attrs else "")
        )
        shape = html.escape(", ".join(type_str(o.shape, o.dtype) for o in n.outputs))[:34]
        parts.append(
            f'<g class="node"><title>{tip}</title><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6"/>'
            f'<text x="{x + box_w / 2}" y="{y + 18}" class="op">{html.escape(n.op)}</text>'
            f'<text x="{x + box_w / 2}" y="{y + 34}" class="ty">{shape}</text></g>'
        )
    ins = ", ".join(html.escape(f"{v.name}: {type_str(v.shape, v.dtype)}") for v in graph.inputs)
    outs = ", ".join(html.escape(v.name) for v in graph.outputs)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(graph.name)} - Ember IR</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 16px; }}
svg line {{ stroke: #888; stroke-width: 1.2; }}
svg rect {{ fill: #fff4e6; stroke: #d9480f; }}
svg g.node:hover rect {{ fill: #ffd8a8; }}
svg text {{ text-anchor: middle; font-size: 11px; }}
svg text.op {{ font-weight: bold; font-size: 12px; }}
svg text.ty {{ fill: #555; }}
</style></head><body>
<h2>{html.escape(graph.name)}</h2>
<p>{len(graph.nodes)} nodes; inputs: {ins}; outputs: {outs}. Hover a node for its attributes and shapes.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">
{chr(10).join(parts)}
</svg></body></html>
"""
