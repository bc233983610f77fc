"""The letterbox of `letterbox_torch.DeviceLetterbox` as one Triton kernel: the same bytes.

Imported only where Triton imports (desktop CUDA; Jetson torch builds often lack it).

One program per BLOCK pixels of the network input plane: a pixel outside the resized image
gets the pad value; one inside reads its two source rows and two source columns from the
tables, sums each row horizontally into int32 (p0 * a0 + p1 * a1), combines the rows as
OpenCV's SIMD path does (((S0 >> 4) * b0) >> 16 + ((S1 >> 4) * b1) >> 16 + 2) >> 2, and
writes R, G, B / 255 into the three planes. The torch path makes about ten passes over the
image with int32 intermediates; this makes one, reading each source pixel it needs and writing
each input value once.

The quotient is float32 division with IEEE rounding (div_rn, not the approximate division
Triton emits for `/`), then rounded to the input's dtype, as torch divides a float16 tensor.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import triton
import triton.language as tl

if TYPE_CHECKING:
    import torch

_BLOCK = 1024


@triton.jit
def _letterbox(source, rows, row_weights, cols, col_weights, out, plane, width, top, left,
               resized_h, resized_w, source_w, pad_value, BLOCK: tl.constexpr,
               RESIZED: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_plane = offsets < plane
    y = offsets // width - top
    x = offsets % width - left
    interior = in_plane & (y >= 0) & (y < resized_h) & (x >= 0) & (x < resized_w)
    y = tl.where(interior, y, 0)
    x = tl.where(interior, x, 0)
    if RESIZED:
        row0 = tl.load(rows + y, mask=interior, other=0).to(tl.int64) * source_w
        row1 = tl.load(rows + resized_h + y, mask=interior, other=0).to(tl.int64) * source_w
        weight_y0 = tl.load(row_weights + y, mask=interior, other=0)
        weight_y1 = tl.load(row_weights + resized_h + y, mask=interior, other=0)
        col0 = tl.load(cols + x, mask=interior, other=0).to(tl.int64)
        col1 = tl.load(cols + resized_w + x, mask=interior, other=0).to(tl.int64)
        weight_x0 = tl.load(col_weights + x, mask=interior, other=0)
        weight_x1 = tl.load(col_weights + resized_w + x, mask=interior, other=0)
    else:
        pixel = (y.to(tl.int64) * source_w + x) * 3
    for channel in tl.static_range(3):
        if RESIZED:
            top_row = (tl.load(source + (row0 + col0) * 3 + channel, mask=interior,
                               other=0).to(tl.int32) * weight_x0
                       + tl.load(source + (row0 + col1) * 3 + channel, mask=interior,
                                 other=0).to(tl.int32) * weight_x1)
            bottom_row = (tl.load(source + (row1 + col0) * 3 + channel, mask=interior,
                                  other=0).to(tl.int32) * weight_x0
                          + tl.load(source + (row1 + col1) * 3 + channel, mask=interior,
                                    other=0).to(tl.int32) * weight_x1)
            value = ((((top_row >> 4) * weight_y0) >> 16)
                     + (((bottom_row >> 4) * weight_y1) >> 16) + 2) >> 2
        else:
            value = tl.load(source + pixel + channel, mask=interior, other=0).to(tl.int32)
        value = tl.where(interior, value, pad_value).to(tl.float32)
        quotient = tl.math.div_rn(value, tl.full([BLOCK], 255.0, tl.float32))
        tl.store(out + (2 - channel) * plane + offsets, quotient.to(out.dtype.element_ty),
                 mask=in_plane)


def letterbox(source: torch.Tensor, rows: torch.Tensor, row_weights: torch.Tensor,
              cols: torch.Tensor, col_weights: torch.Tensor, out: torch.Tensor,
              top: int, left: int, resized_hw: tuple, pad_value: int,
              resized: bool) -> torch.Tensor:
    """Letterbox `source` into `out`, one kernel launch.

    source: (h, W, 3) uint8 contiguous, the frame or the rows the tables index; rows,
    row_weights: (2, resized_h) int32, positions in `source` and 11-bit weights (OpenCV's
    vertical rule); cols, col_weights: (2, resized_w) int32 (the horizontal rule); out:
    [1, 3, H, W] float32/float16, contiguous. Without `resized` the tables are not read and the
    source is (resized_h, resized_w, 3). Returns `out`.
    """
    import torch

    plane = out.shape[2] * out.shape[3]
    # Triton launches on the current CUDA device, which need not be out's.
    device = torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext()
    with device:
        _letterbox[(triton.cdiv(plane, _BLOCK),)](
            source, rows, row_weights, cols, col_weights, out, plane, out.shape[3], top, left,
            resized_hw[0], resized_hw[1], source.shape[1], pad_value, BLOCK=_BLOCK,
            RESIZED=resized)
    return out
