"""The stem conv-and-max-pool kernel (backends/tvm/stem.py): strips of pooled rows in parallel; in each, the conv
rows the strip's windows read are computed first (register tiles of pixels x vectors over the conv's window and
input channels, bias and activation applied as a tile is stored), then the pool reads them from cache. A padded
conv's strip first copies the input rows it reads into a padded NHWC buffer of its own (35 x 229 x 3 floats for
ResNet-50's strips), where the tiles had tested every broadcast against the border: ResNet-50's stem 2.04 against
1.77 ms (Zen 3, 2 threads). An unpadded one reads the NCHW planes directly: copying SqueezeNet's rows per strip
took it from 0.354 to 0.416 ms."""

from __future__ import annotations

from tvm import s_tir

from ember.backends.tvm.schedules.common import CPURule
from ember.backends.tvm.schedules.contraction import copies
from ember.backends.tvm.schedules.expand_depthwise import ACCUMULATORS, STRIP_BYTES, tiles_at_strip, window_strips
from ember.backends.tvm.stem import POOL_STRIDE, STEM_ACTIVATION, STEM_POOL


def even_strips(out_rows: int, stride: int, row_bytes: int) -> int:
    """Pooled rows per strip: the fewest strips whose conv rows (for a window of 3 rows) fit STRIP_BYTES, made an
    even number (a pool of 2 or 4 threads splits them evenly; the last strip may be short)."""
    fit = max(1, (STRIP_BYTES // row_bytes - 3) // stride + 1)
    strips = -(-out_rows // fit)
    strips += strips % 2 if strips < out_rows else 0
    return -(-out_rows // strips)


class StemPool(CPURule):
    """Parallel strips of pooled rows; the conv's tiles computed at each strip, the pool's after them."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        names = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {STEM_ACTIVATION, STEM_POOL} <= set(names):
            return None
        conv = sch.get_producers(names[STEM_ACTIVATION])[0]
        pads = []
        for producer in sch.get_producers(conv):  # the padding, the transpose before it
            for earlier in sch.get_producers(producer):
                sch.compute_inline(earlier)
            if copies(sch, producer):
                sch.compute_inline(producer)
            else:
                pads.append(producer)
        _, _, w, k = (int(v.dom.extent) for v in sch.get(names[STEM_ACTIVATION]).iter_vars)
        out_rows = int(sch.get(names[STEM_POOL]).iter_vars[1].dom.extent)
        pool_stride = int(sch.get(names[STEM_POOL]).annotations[POOL_STRIDE])
        lanes = bits // 32
        strip, _ = window_strips(sch, names[STEM_POOL], lanes, even_strips(out_rows, pool_stride, w * k * 4))
        tiles_at_strip(sch, conv, names[STEM_ACTIVATION], strip, lanes, ACCUMULATORS[bits])
        for pad in pads:
            sch.compute_at(pad, strip)
        return sch
