"""Reading the Ember IR text format back into a Graph; errors carry file:line:column."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Graph, Value

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<ref>[%@](?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.$/\-]+))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:inf\b|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<arrow>->)
  | (?P<punct>[()\[\]{}<>,=:?])
    """,
    re.VERBOSE,
)


class Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


class Parser:
    def __init__(self, text: str, file: str = "<string>", base_dir: Path | None = None):
        self.file = file
        self.base_dir = base_dir
        self.tokens = self._tokenize(text)
        self.pos = 0

    # ---- tokens -------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[Token]:
        tokens, pos, line, line_start = [], 0, 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                self._error_at(line, pos - line_start + 1, f"unexpected character {text[pos]!r}")
            kind = m.lastgroup
            if kind != "ws":
                tokens.append(Token(kind, m.group(), line, pos - line_start + 1))
            newlines = m.group().count("\n")
            if newlines:
                line += newlines
                line_start = m.start() + m.group().rfind("\n") + 1
            pos = m.end()
        tokens.append(Token("eof", "", line, pos - line_start + 1))
        return tokens

    def _error_at(self, line: int, col: int, msg: str):
        raise EmberError(msg, file=f"{self.file}:{line}:{col}")

    def error(self, msg: str, tok: Token | None = None):
        tok = tok or self.peek()
        self._error_at(tok.line, tok.col, msg)

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind != "string":
            self.pos += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> Token:
        tok = self.peek()
        if tok.text != text or tok.kind == "string":
            self.error(f"expected {what or repr(text)}, got {tok!r}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            self.error(f"expected {what}, got {tok!r}")
        return self.next()

    # ---- pieces -------------------------------------------------------------------------
    def ref(self, sigil: str | None = None) -> tuple[str, str, Token]:
        tok = self.expect_kind("ref", "a %value or @constant name")
        if sigil and tok.text[0] != sigil:
            self.error(f"expected a {sigil}name, got {tok!r}", tok)
        body = tok.text[1:]
        return tok.text[0], (_unquote(body) if body.startswith('"') else body), tok

    def type_(self) -> tuple[tuple, str]:
        tok = self.expect_kind("ident", "an element type such as f32")
        if tok.text not in dtypes.DTYPES:
            self.error(f"unknown element type '{tok.text}'", tok)
        self.expect("[")
        dims = []
        while not self.accept("]"):
            if dims:
                self.expect(",", "',' or ']'")
            t = self.next()
            if t.kind == "number" and re.fullmatch(r"\d+", t.text):
                dims.append(int(t.text))
            elif t.kind == "ident" or t.text == "?":
                dims.append(t.text)
            else:
                self.error(f"expected a dimension (integer, symbol or ?), got {t!r}", t)
        return tuple(dims), tok.text

    def scalar(self):
        tok = self.next()
        if tok.kind == "number":
            if tok.text in ("inf", "-inf"):
                return float(tok.text)
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "string":
            return _unquote(tok.text)
        if tok.kind == "ident":
            return {"true": True, "false": False, "nan": float("nan")}.get(tok.text, tok.text)
        self.error(f"expected a value, got {tok!r}", tok)

    def attr_value(self):
        if self.accept("["):
            items = []
            while not self.accept("]"):
                if items:
                    self.expect(",", "',' or ']'")
                items.append(self.scalar())
            return tuple(items)
        return self.scalar()

    def _dense(self, value, shape, dtype, tok: Token) -> np.ndarray:
        flat = list(value) if isinstance(value, tuple) else [value]
        if not all(isinstance(d, int) for d in shape):
            self.error("constants must have static shapes", tok)
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(flat) != size:
            self.error(f"constant has {len(flat)} values, its type {dtype}{list(shape)} holds {size}", tok)
        try:
            return np.array(flat, dtype=dtypes.to_numpy(dtype)).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            self.error(f"constant values do not fit {dtype}", tok)

    # ---- graph --------------------------------------------------------------------------
    def parse(self) -> Graph:
        self.expect("graph", "'graph'")
        _, name, _ = self.ref("@")
        g = Graph(name)
        env: dict[str, Value] = {}
        self.expect("(")
        while not self.accept(")"):
            if g.inputs:
                self.expect(",", "',' or ')'")
            _, vname, tok = self.ref("%")
            self.expect(":")
            shape, dtype = self.type_()
            if vname in env:
                self.error(f"value %{vname} is defined twice", tok)
            env["%" + vname] = g.add_input(vname, shape, dtype)
        self.expect("->")
        self.expect("(")
        header_outs = []
        while not self.accept(")"):
            if header_outs:
                self.expect(",", "',' or ')'")
            sigil, oname, _ = self.ref()
            header_outs.append(sigil + oname)
        self.expect("{")
        sidecar = self._weights()
        while not self.accept("return"):
            tok = self.peek()
            if tok.kind != "ref":
                self.error(f"expected a definition or 'return', got {tok!r}")
            if tok.text.startswith("@"):
                self._const_def(g, env, sidecar)
            else:
                self._node_def(g, env)
        outs = [self._use(env)]
        while self.accept(","):
            outs.append(self._use(env))
        self.expect("}")
        self.expect_kind("eof", "end of input")
        if [("@" if v.is_const else "%") + v.name for v in outs] != header_outs:
            self.error("the graph header's results differ from its return", self.tokens[0])
        g.outputs = outs
        return g

    def _use(self, env: dict[str, Value]) -> Value:
        sigil, name, tok = self.ref()
        try:
            return env[sigil + name]
        except KeyError:
            self.error(f"use of undefined value {sigil}{name}", tok)

    def _weights(self) -> dict[str, np.ndarray] | None:
        if not self.accept("weights"):
            return None
        tok = self.expect_kind("string", "a quoted .npz file name")
        name = _unquote(tok.text)
        if self.base_dir is None:
            self.error("this text references a weights file but was not read from a file", tok)
        path = (self.base_dir / name).resolve()
        if self.base_dir.resolve() not in path.parents:
            self.error(f"weights file '{name}' is outside the IR file's folder", tok)
        if not path.is_file():
            self.error(f"weights file '{name}' does not exist next to the IR file", tok)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            self.error(f"cannot read weights file '{name}': {e}", tok)

    def _const_def(self, g: Graph, env, sidecar) -> None:
        _, name, tok = self.ref("@")
        self.expect("=")
        self.expect("const", "'const'")
        if self.accept("dense"):
            self.expect("<")
            value = self.attr_value()
            self.expect(">")
            self.expect(":")
            shape, dtype = self.type_()
            array = self._dense(value, shape, dtype, tok)
        else:
            self.expect(":")
            shape, dtype = self.type_()
            if sidecar is None or name not in sidecar:
                self.error(f"constant @{name} has no inline data and no entry in the weights file", tok)
            array = sidecar[name]
            if tuple(array.shape) != tuple(shape) or dtypes.from_numpy(array.dtype) != dtype:
                self.error(
                    f"weights entry for @{name} is {dtypes.from_numpy(array.dtype)}{list(array.shape)}, "
                    f"the text says {dtype}{list(shape)}",
                    tok,
                )
        if "@" + name in env or g.has_value(name):
            self.error(f"constant @{name} is defined twice", tok)
        env["@" + name] = g.add_constant(array, name, dtype)

    def _node_def(self, g: Graph, env) -> None:
        outs = [self.ref("%")]
        while self.accept(","):
            outs.append(self.ref("%"))
        self.expect("=")
        op_tok = self.expect_kind("ident", "an op name")
        self.expect("(")
        args: list[Value | None] = []
        while not self.accept(")"):
            if args:
                self.expect(",", "',' or ')'")
            if self.accept("none"):
                args.append(None)
            else:
                args.append(self._use(env))
        attrs = {}
        if self.accept("{"):
            while not self.accept("}"):
                if attrs:
                    self.expect(",", "',' or '}'")
                key = self.expect_kind("ident", "an attribute name").text
                self.expect("=")
                attrs[key] = self.attr_value()
        self.expect(":")
        types = [self.type_()]
        while self.accept(","):
            types.append(self.type_())
        node_name = outs[0][1]
        if self.accept("loc"):
            self.expect("(")
            node_name = _unquote(self.expect_kind("string", "a quoted node name").text)
            self.expect(")")
        for _, oname, tok in outs:
            if "%" + oname in env or g.has_value(oname):
                self.error(f"value %{oname} is defined twice", tok)
        try:
            node = g.add_node(op_tok.text, args, attrs, name=node_name, output_names=[o[1] for o in outs])
        except EmberError as e:
            self.error(f"{e.message}" + (f" ({e.hint})" if e.hint else ""), op_tok)
        if node.name != node_name:
            self.error(f"node name '{node_name}' is used twice", op_tok)
        if len(node.outputs) != len(outs):
            self.error(f"'{op_tok.text}' defines {len(node.outputs)} results, the text names {len(outs)}", op_tok)
        for out, (want_shape, want_dtype) in zip(node.outputs, types):
            if (tuple(out.shape), out.dtype) != (tuple(want_shape), want_dtype):
                self.error(
                    f"type of %{out.name} is {want_dtype}{list(want_shape)} in the text, but "
                    f"'{op_tok.text}' infers {out.dtype}{list(out.shape)}",
                    op_tok,
                )
            env["%" + out.name] = out


def parse_graph(text: str, file: str = "<string>", base_dir: str | os.PathLike | None = None) -> Graph:
    """Parse IR text; `base_dir` is where a `weights "x.npz"` sidecar is looked up."""
    return Parser(text, file, Path(base_dir) if base_dir is not None else None).parse()


def read_ir(path: str | os.PathLike) -> Graph:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise EmberError("no such file", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise EmberError(f"cannot read IR text ({e})", file=str(p)) from None
    return parse_graph(text, str(p), p.parent)
