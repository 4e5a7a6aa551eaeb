"""Shape arithmetic shared by type-inference functions, tolerant of symbolic dims."""

from __future__ import annotations

from collections.abc import Sequence

from ember.errors import EmberError

UNKNOWN = "?"


def is_static(shape: Sequence) -> bool:
    return all(isinstance(d, int) for d in shape)


def broadcast(*shapes: Sequence) -> tuple:
    """Numpy-style broadcast of shapes whose dims are ints or symbol names."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        ints = {d for d in dims if isinstance(d, int) and d != 1}
        syms = [d for d in dims if not isinstance(d, int)]
        if len(ints) > 1:
            raise EmberError(f"shapes {' and '.join(_fmt(s) for s in shapes)} do not broadcast")
        if ints:
            out.append(ints.pop())
        elif syms:
            named = [d for d in syms if d != UNKNOWN]
            out.append(named[0] if named else UNKNOWN)
        else:
            out.append(1)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise EmberError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def pool_out(size, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False):
    """Output extent of a convolution or pooling window along one axis."""
    if not isinstance(size, int):
        return UNKNOWN
    span = size + p0 + p1 - d * (k - 1) - 1
    if span < 0:
        raise EmberError(f"window {k} (dilation {d}) is larger than the padded input extent {size + p0 + p1}")
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p0:
        out -= 1
    return out


def prod(dims: Sequence) -> int | str:
    total = 1
    for d in dims:
        if not isinstance(d, int):
            return UNKNOWN
        total *= d
    return total


def _fmt(shape: Sequence) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


fmt = _fmt
