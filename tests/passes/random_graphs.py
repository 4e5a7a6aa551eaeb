"""Random f32 graphs biased toward what the -O2 passes rewrite (conv+batch_norm, affine ops after layers,
matmul+bias, reshape and transpose chains, no-ops, duplicates, dead code, shape arithmetic) and toward the
decomposed GELU, HardSwish, SiLU, LayerNorm and attention forms that recognizing passes will target."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ember.ir.graph import Graph, Value
from ember.ir.ops import get_schema
from ember.ir.printer import print_graph
from tests.passes import decomposed_forms as forms

Draw = Callable[[st.SearchStrategy], Any]
MAX_ELEMENTS = 1024  # per value a block starts from; keeps the reference interpreter fast
# Inputs that trip defects reported against passes outside this suite's reach, each pinned by an xfail test
# in test_pipeline_fuzz.py; drop an entry when its pass is fixed, so the fuzz covers those inputs again.
AVOID: set[str] = set()  # inputs the generator must not make (none today; see FOUND_DEFECTS)


class GraphGen:
    """Builds one graph from draws. Blocks read values from `pool` and add what they make; `shape(v)` is a
    value's run-time shape (symbolic and computed dims resolved), so blocks size constants to fit."""

    def __init__(self, draw: Draw):
        self.draw = draw
        self.g = Graph("fuzz")
        self.n = draw(st.integers(1, 3))
        self.batch: int | str = "N" if draw(st.integers(0, 3)) == 0 else self.n
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.pool: list[Value] = []
        self.avoid = AVOID
        self._shapes: dict[int, tuple[int, ...]] = {}

    # ---- run-time shapes --------------------------------------------------------------------
    def shape(self, v: Value) -> tuple[int, ...]:
        """The shape `v` has at run time, with the batch dim the inputs will get."""
        if id(v) not in self._shapes:
            node = v.producer
            if node is None:
                self._shapes[id(v)] = tuple(self.n if d == "N" else d for d in v.shape)
            else:
                twins = [
                    None if i is None else Value(i.name, self.shape(i), i.dtype, self.ints(i)) for i in node.inputs
                ]
                for out, (s, _) in zip(node.outputs, get_schema(node.op).infer_types(twins, node.attrs)):
                    assert all(isinstance(d, int) for d in s), (node, s)
                    self._shapes[id(out)] = tuple(s)
        return self._shapes[id(v)]

    def ints(self, v: Value) -> np.ndarray | None:
        """The run-time contents of a constant or of an i64 tensor computed from shapes, else None."""
        if v.is_const or v.dtype != "i64" or v.producer is None:
            return v.const
        node = v.producer
        if node.op == "shape":
            return np.array(self.shape(node.inputs[0]), np.int64)[node.attrs["start"] : node.attrs["end"]]
        args = [None if i is None else self.ints(i) for i in node.inputs]
        if any(a is None and i is not None for a, i in zip(args, node.inputs)):
            return None
        return get_schema(node.op).evaluate(args, node.attrs)[node.outputs.index(v)]

    # ---- draws and constants ----------------------------------------------------------------
    def pick(self, options: Sequence) -> Any:
        return self.draw(st.sampled_from(options))

    def chance(self) -> bool:
        return self.draw(st.booleans())

    def take(self, fits: Callable[[tuple[int, ...]], bool] = lambda s: True) -> Value | None:
        """A pool value whose run-time shape `fits` (and is small), drawn by index so replays match."""
        options = [v for v in self.pool if v.dtype == "f32" and np.prod(self.shape(v)) <= MAX_ELEMENTS]
        options = [v for v in options if fits(self.shape(v))]
        return options[self.draw(st.integers(0, len(options) - 1))] if options else None

    def emit(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        return self.g.emit(op, *inputs, **attrs)

    def comm(self, op: str, a: Value, b: Value) -> Value:
        """A commutative op with its operands in either order."""
        return self.emit(op, a, b) if self.chance() else self.emit(op, b, a)

    def const(self, array: Any, dtype: Any = np.float32) -> Value:
        return self.g.add_constant(np.asarray(array, dtype=dtype), "c")

    def weight(self, array: np.ndarray) -> Value:
        """A constant, or the same numbers as a constant expression that fold-constants must fold first
        (a reshaped, transposed or f64-cast constant, as exporters write weights)."""
        form = self.pick(["const", "const", "const", "reshape", "cast", "transpose"])
        if form == "reshape" and array.ndim:
            return self.emit("reshape", self.const(array.reshape(-1)), self.const(array.shape, np.int64))
        if form == "cast":
            return self.emit("cast", self.const(array, np.float64), to="f32")
        if form == "transpose" and array.ndim >= 2:
            perm = list(range(array.ndim))[::-1]
            return self.emit("transpose", self.const(np.transpose(array, perm)), perm=perm)
        return self.const(array)

    def randn(self, shape: Sequence[int], scale: float = 1.0) -> Value:
        return self.weight(self.rng.standard_normal(tuple(shape)) * scale)

    def scalar(self, x: float) -> Value:
        """`x` as a rank-0 or a [1] constant."""
        return self.const(x if self.chance() else [x])

    def signed(self, shape: Sequence[int], lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, tuple(shape)) * self.rng.choice([-1.0, 1.0], tuple(shape))

    # ---- inputs -----------------------------------------------------------------------------
    def image(self) -> Value:
        c, h, w = (self.draw(st.integers(1, 6)), self.draw(st.integers(2, 7)), self.draw(st.integers(2, 7)))
        return self.g.add_input(f"img{len(self.g.inputs)}", (self.batch, c, h, w))

    def features(self) -> Value:
        dims = (self.draw(st.integers(1, 4)),) if self.chance() else ()
        return self.g.add_input(f"feat{len(self.g.inputs)}", (self.batch, *dims, self.draw(st.integers(1, 8))))

    def sequence(self) -> Value:
        c, length = self.draw(st.integers(1, 6)), self.draw(st.integers(3, 9))
        return self.g.add_input(f"seq{len(self.g.inputs)}", (self.batch, c, length))

    def clip(self) -> Value:
        c, d, h, w = (self.draw(st.integers(1, 3)), *(self.draw(st.integers(2, 5)) for _ in range(3)))
        return self.g.add_input(f"clip{len(self.g.inputs)}", (self.batch, c, d, h, w))

    def input_of(self, fits: Callable, make: Callable[[], Value]) -> Value:
        x = self.take(fits)
        if x is None:
            x = make()
            self.pool.append(x)
        return x

    # ---- layers and what follows them -------------------------------------------------------
    def conv(self) -> None:
        """conv2d with constant weights (groups, depthwise, strides, pads, dilations), maybe batch_norm."""
        x = self.input_of(lambda s: len(s) == 4 and s[1] <= 8 and min(s[2:]) >= 2, self.image)
        _, c, h, w = self.shape(x)
        g = self.pick([1, c] + [d for d in range(2, c) if c % d == 0])
        pads = tuple(self.draw(st.integers(0, 1)) for _ in range(4))
        strides, dil = (self.pick([1, 2]), self.pick([1, 2])), (self.pick([1, 1, 2]), 1)
        kh = self.pick([k for k in (1, 2, 3) if dil[0] * (k - 1) < h + pads[0] + pads[2]])
        kw = self.pick([k for k in (1, 2, 3) if k <= w + pads[1] + pads[3]])
        ow = (w + pads[1] + pads[3] - kw) // strides[1] + 1
        # As many channels as output columns, sometimes: a [C] constant then fits the last axis, not channels.
        o = g * self.draw(st.integers(1, max(1, 8 // g)))
        o = ow if ow % g == 0 and self.chance() else o
        args = [x, self.randn((o, c // g, kh, kw), 1 / math.sqrt(c // g * kh * kw))]
        if self.chance():
            args.append(self.randn((o,), 0.5))
        y = self.emit("conv2d", *args, strides=strides, pads=pads, dilations=dil, group=g)
        self.pool.append(y)
        if self.chance():
            y = self.batch_norm(y)
        self.tail(y, 1)

    def conv1d(self) -> None:
        """A 1-D conv as the frontends lift it: unsqueeze to a unit height, conv2d, squeeze; then what follows a
        layer (canonicalize sinks the squeeze below it)."""
        x = self.input_of(lambda s: len(s) == 3 and s[1] <= 8 and s[2] >= 3, self.sequence)
        _, c, length = self.shape(x)
        k, pad = self.pick([1, 3]), self.draw(st.integers(0, 1))
        o = self.draw(st.integers(1, 8))
        w = self.randn((o, c, 1, k), 1 / math.sqrt(c * k))
        y = self.emit("conv2d", self.emit("unsqueeze", x, axes=[2]), w, pads=(0, pad, 0, pad))
        y = self.emit("squeeze", y, axes=[2])
        self.pool.append(y)
        if self.chance():
            y = self.batch_norm(y)
        self.tail(y, 1)

    def conv_transpose(self) -> None:
        """conv2d_transpose with constant weights (groups, strides, pads, output padding), which
        conv-transpose-to-conv runs as a conv2d over its stride phases."""
        x = self.input_of(lambda s: len(s) == 4 and s[1] <= 8, self.image)
        _, c, h, w = self.shape(x)
        g = self.pick([1, c])
        strides, kernel = (self.pick([1, 2]), self.pick([1, 2, 3])), (self.pick([1, 2, 3]), self.pick([1, 3]))
        out_pad = tuple(self.draw(st.integers(0, s - 1)) for s in strides)
        full = [strides[i] * (size - 1) + kernel[i] + out_pad[i] for i, size in enumerate((h, w))]
        pads = tuple(self.draw(st.integers(0, min(kernel[i % 2] - 1, (full[i % 2] - 1) // 2))) for i in range(4))
        o = g * self.draw(st.integers(1, max(1, 6 // g)))
        w = self.randn((c, o // g, *kernel), 1 / math.sqrt(c // g * math.prod(kernel)))
        y = self.emit("conv2d_transpose", x, w, strides=strides, pads=pads, output_padding=out_pad, group=g)
        self.pool.append(y)
        self.tail(y, 1)

    def volume(self) -> None:
        """A 3-D conv (maybe with batch_norm) or pool, which expand-volumes turns into 2-D ones over depth slices."""
        x = self.input_of(lambda s: len(s) == 5, self.clip)
        if not all(isinstance(d, int) for d in x.shape[1:]):  # a symbolic batch moved off axis 0: 3-D ops refuse it
            x = self.clip()
            self.pool.append(x)
        _, c, d, h, w = self.shape(x)
        pads = tuple(self.draw(st.integers(0, 1)) for _ in range(6))
        strides, dil = tuple(self.pick([1, 2]) for _ in range(3)), (self.pick([1, 2]), 1, 1)
        kd = self.pick([k for k in (1, 2) if dil[0] * (k - 1) < d + pads[0] + pads[3]])
        kernel = (kd, self.pick([1, 2, 3][: h + pads[1] + pads[4]]), self.pick([1, 2][: w + pads[2] + pads[5]]))
        if self.chance():
            y = self.emit(self.pick(["max_pool3d", "avg_pool3d"]), x, kernel=kernel, strides=strides, pads=pads,
                          dilations=(1, 1, 1), ceil_mode=int(self.chance()))  # fmt: skip
            self.pool.append(y)
            return
        g = self.pick([1, c])
        o = g * self.draw(st.integers(1, max(1, 6 // g)))
        w_ = self.randn((o, c // g, *kernel), 1 / math.sqrt(c // g * math.prod(kernel)))
        y = self.emit("conv3d", x, w_, strides=strides, pads=pads, dilations=dil, group=g)
        self.pool.append(y)
        if self.chance():
            y = self.batch_norm(y)
        self.tail(y, 1)

    def batch_norm(self, x: Value) -> Value:
        c = self.shape(x)[1]
        params = [self.signed((c,), 0.5, 1.5), self.rng.normal(0, 0.5, c), self.rng.normal(0, 0.5, c)]
        params.append(self.rng.uniform(0.5, 2.0, c))
        y = self.emit("batch_norm", x, *map(self.const, params), epsilon=self.pick([1e-5, 1e-3]))
        self.pool.append(y)
        return y

    def dense(self) -> None:
        """dense, or matmul by a constant matrix plus a bias add (and a 3-D constant that must stay matmul)."""
        x = self.input_of(lambda s: 1 <= len(s) <= 3 and s[-1] <= 16, self.features)
        k, n = self.shape(x)[-1], self.pick([*range(1, 9), *self.shape(x)[:-1]])  # n may equal another dim
        form = self.pick(["dense", "matmul", "matmul", "matmul-3d"])
        if form == "dense":
            bias = [self.randn(self.pick([(n,), (1, n)]), 0.5)] if self.chance() else []
            y = self.emit("dense", x, self.randn((n, k), 1 / math.sqrt(k)), *bias)
        else:
            w = self.randn((k, n) if form == "matmul" else (1, k, n), 1 / math.sqrt(k))
            y = self.emit("matmul", x, w)
            if self.chance():
                self.pool.append(y)
                y = self.comm("add", y, self.randn(self.pick([(n,), (1, n), (1, 1, n)]), 0.5))
        self.pool.append(y)
        self.tail(y, -1)

    def matmul(self) -> None:
        """matmul of two computed values, vectors included, one of them maybe scaled by a scalar (a matmul
        that is neither dense nor attention, for the passes that move scalars through matmuls)."""
        a = self.input_of(lambda s: len(s) >= 1 and s[-1] <= 16, self.features)
        if self.chance():
            a = self.g.add_input(f"vec{len(self.g.inputs)}", self.shape(a)[-1:])
        s, k = self.shape(a), self.shape(a)[-1]
        n = self.draw(st.integers(1, 4))
        b_shape = self.pick([(k,), (k, n), (*s[:-2], k, n)] if len(s) > 2 else [(k,), (k, n)])
        b = self.g.add_input(f"rhs{len(self.g.inputs)}", b_shape)
        scaled = self.pick(["none", "a", "b"])
        if len(b_shape) == 1 and "matmul-vector-scaled" in self.avoid:
            scaled, a = "none", self.g.add_input(f"lhs{len(self.g.inputs)}", s)  # a computed `a` may hide a scale
        if scaled != "none":
            factor = self.scalar(self.pick([0.5, 2.0, -1.5]))
            op = self.pick(["mul", "div"])
            scale = (lambda v: self.comm("mul", v, factor)) if op == "mul" else (lambda v: self.emit("div", v, factor))
            a, b = (scale(a), b) if scaled == "a" else (a, scale(b))
        y = self.emit("matmul", a, b)
        self.pool.append(y)
        if y.rank and self.chance():
            self.tail(y, -1)

    def tail(self, y: Value, axis: int) -> None:
        """What models put after a layer: affine ops by constants, a residual add, an activation."""
        for _ in range(self.pick([0, 1, 1, 2])):
            y = self.affine(y, axis)
        if self.chance():
            z = self.take(lambda s: s == self.shape(y))  # y itself, the layer's input, ...
            if z is not None:
                y = self.comm("add", y, z)
                self.pool.append(y)
        if self.chance():
            forms.activation(self, y)

    def affine(self, y: Value | None, axis: int | None = None) -> Value:
        """y (+-*/) a constant that is per-channel (foldable), scalar, or varies along another axis or grows
        the rank (both must not fold)."""
        y = y if y is not None else self.input_of(lambda s: len(s) >= 1, self.features)
        s = self.shape(y)
        ax = (axis if axis is not None else self.draw(st.integers(0, len(s) - 1))) % len(s)
        other = [i for i in range(len(s)) if i != ax and s[i] > 1]
        kind = self.pick(["channel", "channel", "scalar", "other" if other else "channel", "grow"])
        if kind == "scalar":
            shape: tuple[int, ...] = self.pick([(), (1,)])
        else:
            # Prefer an axis as long as the channel axis, where a shape mix-up would go unnoticed.
            axis2 = self.pick([i for i in other if s[i] == s[ax]] * 2 + other) if other else ax
            keep = {ax} if kind != "other" else {ax, axis2} if self.chance() else {axis2}
            shape = tuple(d if i in keep else 1 for i, d in enumerate(s))
            shape = (2, *shape) if kind == "grow" else shape[self.draw(st.integers(0, min(keep))) :]
        op = self.pick(["mul", "mul", "add", "add", "div", "sub"])
        value = self.pick(["random", "random", "random", "neutral", "zero-in-divisor" if op == "div" else "random"])
        if value == "neutral":
            arr = np.full(shape, 1.0 if op in ("mul", "div") else 0.0)
        elif op in ("mul", "div"):
            arr = self.signed(shape, 0.25, 2.0)
            if value == "zero-in-divisor" and arr.size > ("scalar-zero-divisor" in self.avoid):
                arr.reshape(-1)[0] = 0.0
        else:
            arr = self.rng.normal(0, 0.5, shape)
        c = self.weight(np.asarray(arr, np.float32))
        y = self.comm(op, y, c) if op in ("mul", "add") else self.emit(op, y, c)
        self.pool.append(y)
        return y

    # ---- data movement, no-ops, duplicates, dead code, shape arithmetic ---------------------
    def reshapes(self) -> None:
        """A chain of reshape/flatten/transpose/squeeze/unsqueeze, often one that does nothing overall."""
        x = self.input_of(lambda s: len(s) >= 1, self.features)
        for _ in range(self.draw(st.integers(1, 3))):
            x = self.move(x)
            self.pool.append(x)

    def move(self, x: Value) -> Value:
        """One data-movement step: reshape (to the same shape or regrouped), transpose(s), squeeze, ..."""
        s, r = self.shape(x), x.rank
        step = self.pick(
            ["reshape", "reshape-same", "transpose", "transpose-pair", "unsqueeze", "squeeze", "flatten", "split"]
        )
        if step == "split" and any(isinstance(d, int) and d > 1 for d in x.shape):
            return self.split(x)
        if r == 0 and "transpose-rank-0" in self.avoid:
            return self.emit("unsqueeze", x, axes=[0])
        if step in ("transpose", "split") or (step == "squeeze" and 1 not in x.shape):
            return self.emit("transpose", x, perm=self.draw(st.permutations(range(r))))
        if step == "transpose-pair":
            perm = self.draw(st.permutations(range(r)))
            t = self.emit("transpose", x, perm=perm)
            return self.emit("transpose", t, perm=[perm.index(i) for i in range(r)])
        if step == "unsqueeze":
            return self.emit("unsqueeze", x, axes=[self.draw(st.integers(-r - 1, r))])
        if step == "squeeze":
            return self.emit("squeeze", x, axes=[self.pick([i for i, d in enumerate(x.shape) if d == 1])])
        if step == "flatten":
            return self.emit("flatten", x, axis=self.draw(st.integers(0, r)))
        # Dims up to the last symbolic one are copied (0); the static ones after it may regroup.
        last = max([i for i, d in enumerate(x.shape) if not isinstance(d, int)], default=-1)
        head = [0 if not isinstance(d, int) or self.chance() else d for d in x.shape[: last + 1]]
        tail = list(s[last + 1 :])
        if step == "reshape" and tail:
            tail = self.pick([[int(np.prod(tail))], [1, *tail], tail[:-1] + [1, tail[-1]], tail[::-1]])
        spec = head + tail
        if spec and self.chance():
            spec[self.draw(st.integers(0, len(spec) - 1))] = -1
        return self.emit("reshape", x, self.const(spec, np.int64))

    def split(self, x: Value) -> Value:
        """split along a static axis, then one piece or the pieces concatenated back (maybe reordered)."""
        axis = self.pick([i for i, d in enumerate(x.shape) if isinstance(d, int) and d > 1])
        cut = self.draw(st.integers(1, x.shape[axis] - 1))
        pieces = self.g.add_node("split", [x], {"axis": axis, "sizes": [cut, x.shape[axis] - cut]}).outputs
        form = self.pick(["first", "second", "concat", "swapped"])
        if form in ("first", "second"):
            return pieces[0 if form == "first" else 1]
        return self.emit("concat", *(pieces if form == "concat" else pieces[::-1]), axis=axis)

    def noop(self) -> None:
        """identity, cast to the same type, x+0, x*1, x/1 (some with constants that broadcast x bigger,
        which must stay), and casts through f64 (exact) or f16 (lossy, must stay)."""
        x = self.input_of(lambda s: True, self.features)
        s = self.shape(x)
        form = self.pick(["identity", "cast", "cast-f64", "cast-f16", "add0", "sub0", "mul1", "div1", "move"])
        if form == "identity":
            y = self.emit("identity", x)
        elif form == "cast":
            y = self.emit("cast", x, to="f32")
        elif form.startswith("cast-"):
            y = self.emit("cast", self.emit("cast", x, to=form[5:]), to="f32")
        elif form == "move":
            y = self.move(x)
        else:
            shape = self.pick([(), (1,), s, s[-1:], (2, *s), (1, *s)])
            value = self.pick([0.0, -0.0]) if form.endswith("0") else 1.0
            c = self.const(np.full(shape, value))
            y = self.comm(form[:3], x, c) if form[:3] in ("add", "mul") else self.emit(form[:3], x, c)
        self.pool.append(y)

    def duplicates(self) -> None:
        """The same computation twice (CSE must merge), or twice with a different attribute or constant
        shape (CSE must not)."""
        x = self.input_of(lambda s: len(s) >= 1, self.features)
        s = self.shape(x)
        form = self.pick(["same", "same", "const-twin", "attr-differs", "const-shape-differs"])
        if form == "same":
            op = self.pick(["relu", "sigmoid", "neg", "softmax", "reduce_mean", "transpose"])
            attrs = {
                "softmax": {"axis": -1},
                "reduce_mean": {"axes": [-1]},
                "transpose": {"perm": list(range(x.rank))[::-1]},
            }.get(op, {})
            a, b = self.emit(op, x, **attrs), self.emit(op, x, **attrs)
        elif form == "const-twin":
            arr = self.rng.normal(0, 1, s[-1:])
            a, b = self.emit("mul", x, self.const(arr)), self.emit("mul", x, self.const(arr.copy()))
        elif form == "attr-differs":
            a, b = self.emit("clip", x, min=0.0, max=1.0), self.emit("clip", x, min=0.0, max=2.0)
        else:
            arr = self.rng.normal(0, 1, s[-1:])
            a, b = self.emit("add", x, self.const(arr)), self.emit("add", x, self.const(arr[None]))
        self.pool += [a, b] if self.chance() else [self.emit("add", a, b)]

    def dead(self) -> None:
        """Another block whose results nothing reads."""
        saved = list(self.pool)
        self.pick([b for b in BLOCKS if b is not GraphGen.dead])(self)
        self.pool = saved

    def shape_arithmetic(self) -> None:
        """reshape by a shape computed with shape -> gather -> (reduce_prod) -> concat, maybe twice in a row."""
        x = self.input_of(lambda s: len(s) >= 2, self.image)
        for _ in range(self.draw(st.integers(1, 2))):
            x = self.computed_reshape(x)
            self.pool.append(x)

    def computed_reshape(self, x: Value) -> Value:
        """x reshaped to products of runs of its own dims, read off shape(x) at run time."""
        r = x.rank
        cuts = sorted(set(self.draw(st.lists(st.integers(1, r - 1), max_size=r - 1)))) if r > 1 else []
        dims = self.emit("shape", x)
        parts = []
        for a, b in zip([0, *cuts], [*cuts, r]):
            if b - a == 1 and self.chance():
                part = self.emit("unsqueeze", self.emit("gather", dims, self.const(a, np.int64)), axes=[0])
            else:
                part = self.emit("gather", dims, self.const(np.arange(a, b), np.int64))
                part = self.emit("reduce_prod", part, axes=[0], keepdims=1) if b - a > 1 else part
            parts.append(part)
        if self.chance():
            parts[self.draw(st.integers(0, len(parts) - 1))] = self.const([-1], np.int64)
        if self.chance():
            parts.insert(self.draw(st.integers(0, len(parts))), self.const([1], np.int64))
        spec = self.emit("concat", *parts, axis=0) if len(parts) > 1 else parts[0]
        if self.chance():
            self.pool.append(spec)  # an i64 output: folds to a constant output when x is static
        return self.emit("reshape", x, spec)

    def pool_and_flatten(self) -> None:
        """global_avg_pool -> flatten to [B, C] (by flatten or by a computed reshape), ready for dense."""
        x = self.input_of(lambda s: len(s) == 4, self.image)
        p = self.emit("global_avg_pool", x)
        if self.chance():
            y = self.emit("flatten", p, axis=1)
        else:
            dims = self.emit("gather", self.emit("shape", p), self.const([0], np.int64))
            y = self.emit("reshape", p, self.emit("concat", dims, self.const([-1], np.int64), axis=0))
        self.pool += [p, y]

    def build(self) -> Graph:
        self.pool.append(self.image() if self.chance() else self.features())
        for _ in range(self.draw(st.integers(2, 9))):
            self.pick(BLOCKS)(self)
        outs = [self.pool[-1]]
        for _ in range(self.draw(st.integers(0, 2))):
            v = self.pool[self.draw(st.integers(0, len(self.pool) - 1))]
            if all(v is not o for o in outs):
                outs.append(v)
        self.g.outputs = outs
        return self.g


# Blocks, repeated to weight the draw toward the patterns -O2 rewrites.
BLOCKS: list[Callable[[GraphGen], object]] = [
    GraphGen.conv,
    GraphGen.conv,
    GraphGen.conv1d,
    GraphGen.volume,
    GraphGen.volume,  # once, expand-volumes changed 7 of 500 graphs in a CI run, under the fuzz's 2% floor
    GraphGen.conv_transpose,
    GraphGen.dense,
    GraphGen.dense,
    lambda gen: gen.affine(None),
    GraphGen.matmul,
    forms.activation,
    forms.activation,
    forms.layer_norm,
    forms.layer_norm,
    forms.attention,
    GraphGen.reshapes,
    GraphGen.noop,
    GraphGen.noop,
    GraphGen.duplicates,
    GraphGen.dead,
    GraphGen.shape_arithmetic,
    GraphGen.pool_and_flatten,
]


class Case:
    """One random graph's inputs, and the draws that build the graph again (a fresh copy each time)."""

    def __init__(self, feeds: dict[str, np.ndarray], draws: list):
        self.feeds, self.draws = feeds, draws

    def rebuild(self) -> Graph:
        replay = iter(self.draws)
        return GraphGen(lambda strategy: next(replay)).build()

    def __repr__(self) -> str:
        shapes = {k: list(v.shape) for k, v in self.feeds.items()}
        return f"Case(feeds={shapes}):\n{print_graph(self.rebuild())}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a failing example
        printer.text(repr(self))


@st.composite
def cases(draw: Draw) -> Case:
    draws: list = []

    def record(strategy: st.SearchStrategy) -> Any:
        draws.append(draw(strategy))
        return draws[-1]

    gen = GraphGen(record)
    graph = gen.build()
    rng = np.random.default_rng(gen.rng.integers(2**32))
    feeds = {v.name: rng.standard_normal(gen.shape(v)).astype(np.float32) for v in graph.inputs}
    return Case(feeds, draws)
