"""Lowering of the fused attention op: one TE kernel whose softmax evaluates exp as a polynomial."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx, topi

from ember.backends.tvm.rules import _shape_of, rule

LOG2E, LN2 = float(np.log2(np.e)), float(np.log(2.0))
EXP_COEFFS = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0e-1)


def fast_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """exp(x) for float32 as 2^n * p(r), r = x - n ln 2 (TOPI's fast_exp): vector ops only, where the exp
    intrinsic is a scalar libm call per element."""
    x = tirx.max(tirx.min(x, tirx.const(88.3762626647950, "float32")), tirx.const(-88.3762626647949, "float32"))
    n = tirx.floor(x * tirx.const(LOG2E, "float32") + tirx.const(0.5, "float32"))
    r = x - n * tirx.const(LN2, "float32")
    p = tirx.const(EXP_COEFFS[0], "float32")
    for c in EXP_COEFFS[1:]:
        p = p * r + tirx.const(c, "float32")
    two_n = tirx.reinterpret("float32", (tirx.Cast("int32", n) + 127) << 23)
    return two_n * (p * r * r + r + tirx.const(1.0, "float32"))


def softmax_fast_exp(s: te.Tensor) -> te.Tensor:
    """Softmax over the last axis of a float32 [b, i, j] tensor, in TOPI's stages (names included)."""
    b, i, j = s.shape
    kmax, ksum = te.reduce_axis((0, j), "k"), te.reduce_axis((0, j), "k")
    m = te.compute((b, i), lambda x, y: te.max(s[x, y, kmax], axis=kmax), name="T_softmax_maxelem")
    e = te.compute(s.shape, lambda x, y, z: fast_exp(s[x, y, z] - m[x, y]), name="T_softmax_exp")
    total = te.compute((b, i), lambda x, y: te.sum(e[x, y, ksum], axis=ksum), name="T_softmax_expsum")
    return te.compute(s.shape, lambda x, y, z: e[x, y, z] / total[x, y], name="T_softmax_norm")


@rule("attention")
def _attention(L, n, a):
    q, k, v = n.inputs[:3]
    lead = [_shape_of(x, n)[:-2] for x in (q, k, v)]
    batch = int(np.prod(lead[0], dtype=np.int64))

    def compute(qt, kt, vt, *bias):
        sq, d, sk, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
        q3 = topi.reshape(qt, [batch, sq, d])
        k3 = topi.reshape(kt, [batch, sk, d])
        v3 = topi.reshape(vt, [batch, sk, dv])
        qk = topi.nn.batch_matmul(q3, k3)
        s = topi.multiply(qk, tirx.const(n.attrs["scale"], qk.dtype))  # a bare float made fp16 scores fp32
        if bias:
            s4 = topi.add(topi.reshape(s, [*lead[0], sq, sk]), bias[0])
            s = topi.reshape(s4, [batch, sq, sk])
        p = softmax_fast_exp(s) if s.dtype == "float32" else topi.nn.softmax(s, axis=-1)
        out = topi.nn.batch_matmul(p, v3, transpose_b=False)
        return topi.reshape(out, [*lead[0], sq, dv])

    args = [x for x in a[:4] if x is not None]
    return L.bb.emit_te(compute, *args, primfunc_name_hint="attention")
