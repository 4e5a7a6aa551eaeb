"""Lowering of the fused attention op: one TE kernel."""

from __future__ import annotations

import numpy as np
from tvm import tirx, topi

from ember.backends.tvm.rules import _shape_of, rule


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
        p = topi.nn.softmax(s, axis=-1)  # its exp takes its vector form in ember.backends.tvm.fast_math
        out = topi.nn.batch_matmul(p, v3, transpose_b=False)
        return topi.reshape(out, [*lead[0], sq, dv])

    args = [x for x in a[:4] if x is not None]
    return L.bb.emit_te(compute, *args, primfunc_name_hint="attention")
