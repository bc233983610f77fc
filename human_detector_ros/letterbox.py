"""Letterboxing with Ultralytics' exact arithmetic, and the inverse mapping of boxes.

Ultralytics `LetterBox(auto=False, center=True, scaleup=True)` resizes the image to fit the
network input keeping its aspect ratio, pads it with grey 114 and centres it; odd padding puts
the extra pixel at the bottom/right. `boxes_to_source` undoes exactly that geometry.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxTransform:
    """Geometry of one letterbox: source (h, w) -> network input (h, w), in pixels.

    scale: Ultralytics' ratio r = min(H/h, W/w). resized_hw: the size the source is resized to,
    (max(round(h*r), 1), max(round(w*r), 1)). pad_left, pad_top: where it sits in the input.
    """

    src_hw: Tuple[int, int]
    dst_hw: Tuple[int, int]
    scale: float
    pad_left: int
    pad_top: int
    resized_hw: Tuple[int, int]

    @property
    def gain_xy(self) -> Tuple[float, float]:
        """Per-axis scale of the resize actually done: resized size / source size.

        This differs from `scale` by the rounding of the resized size; it is the exact inverse
        of the resize and what Ultralytics' `scale_boxes` divides by.
        """
        return (self.resized_hw[1] / self.src_hw[1], self.resized_hw[0] / self.src_hw[0])

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy in letterbox pixels -> new (N, 4) float32 xyxy in source pixels.

        Removes the padding, divides by the resize gain and clips x to [0, w], y to [0, h]
        (Ultralytics `clip_boxes`). `boxes` is not modified.
        """
        gain_x, gain_y = self.gain_xy
        out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
        out[:, 0::2] -= self.pad_left
        out[:, 1::2] -= self.pad_top
        out[:, 0::2] /= gain_x
        out[:, 1::2] /= gain_y
        height, width = self.src_hw
        np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
        return out

    def boxes_to_letterbox(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy in source pixels -> new (N, 4) float32 xyxy in letterbox pixels."""
        gain_x, gain_y = self.gain_xy
        out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
        out[:, 0::2] *= gain_x
        out[:, 1::2] *= gain_y
        out[:, 0::2] += self.pad_left
        out[:, 1::2] += self.pad_top
        return out


def letterbox_transform(src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> LetterboxTransform:
    """The letterbox of a (h, w) source into a (H, W) network input, as Ultralytics computes it."""
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    dst_h, dst_w = int(dst_hw[0]), int(dst_hw[1])
    if min(src_h, src_w, dst_h, dst_w) <= 0:
        raise ValueError(f'letterbox sizes must be positive, got source {src_hw}, input {dst_hw}')
    ratio = min(dst_h / src_h, dst_w / src_w)
    resized_w = max(round(src_w * ratio), 1)
    resized_h = max(round(src_h * ratio), 1)
    half_pad_w = (dst_w - resized_w) / 2
    half_pad_h = (dst_h - resized_h) / 2
    return LetterboxTransform(
        src_hw=(src_h, src_w), dst_hw=(dst_h, dst_w), scale=ratio,
        pad_left=round(half_pad_w - 0.1), pad_top=round(half_pad_h - 0.1),
        resized_hw=(resized_h, resized_w))


def letterbox(bgr: np.ndarray, transform: LetterboxTransform,
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """HxWx3 uint8 BGR -> the (H, W, 3) uint8 letterboxed image, padded with 114.

    Resizes with cv2.INTER_LINEAR only when the size changes. Writes into `out` (a C-contiguous
    (H, W, 3) uint8 array) when given and returns it.
    """
    if tuple(bgr.shape[:2]) != transform.src_hw or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f'image of shape {bgr.shape} does not match the letterbox source '
                         f'{transform.src_hw} x 3')
    dst_h, dst_w = transform.dst_hw
    if out is None:
        out = np.empty((dst_h, dst_w, 3), dtype=np.uint8)
    elif out.shape != (dst_h, dst_w, 3) or out.dtype != np.uint8:
        raise ValueError(f'out must be ({dst_h}, {dst_w}, 3) uint8, got {out.shape} {out.dtype}')
    top, left = transform.pad_top, transform.pad_left
    resized_h, resized_w = transform.resized_hw
    bottom, right = top + resized_h, left + resized_w
    out[:top] = PAD_VALUE
    out[bottom:] = PAD_VALUE
    out[top:bottom, :left] = PAD_VALUE
    out[top:bottom, right:] = PAD_VALUE
    interior = out[top:bottom, left:right]
    if transform.resized_hw == transform.src_hw:
        interior[...] = bgr
    else:
        cv2.resize(np.ascontiguousarray(bgr), (resized_w, resized_h), dst=interior,
                   interpolation=cv2.INTER_LINEAR)
    return out


@functools.lru_cache(maxsize=None)
def _scaled_grey_levels(dtype: np.dtype) -> np.ndarray:
    """(256,) grey level / 255 in float `dtype`, float16 seen as uint16 (cv2 has no float16).

    Divides (never multiplies by 1/255) so values equal Ultralytics' to the last bit.
    """
    levels = np.arange(256, dtype=dtype)
    np.divide(levels, 255, out=levels)
    levels.flags.writeable = False
    return levels.view(np.uint16) if levels.dtype == np.float16 else levels


def to_network_input(letterboxed_bgr: np.ndarray, dtype: np.dtype = np.float32,
                     out: Optional[np.ndarray] = None,
                     planes: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> [1, 3, H, W] RGB in `dtype` (float32/float16), values / 255.

    Two cv2 passes, no temporaries: the channels go to RGB planes (`planes`, a (3, H, W)
    uint8 scratch buffer, allocated when not given), then a 256-entry table maps each grey
    level to its exact quotient (far faster than numpy's float16 division). Writes into
    `out` when given and returns it.
    """
    height, width = letterboxed_bgr.shape[:2]
    shape = (1, 3, height, width)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
        raise ValueError(f'out must be C-contiguous {shape} {np.dtype(dtype)}, got {out.shape} '
                         f'{out.dtype}')
    if planes is None:
        planes = np.empty((3, height, width), dtype=np.uint8)
    elif planes.shape != shape[1:] or planes.dtype != np.uint8 or not planes.flags.c_contiguous:
        raise ValueError(f'planes must be C-contiguous {shape[1:]} uint8, got {planes.shape} '
                         f'{planes.dtype}')
    cv2.mixChannels([np.ascontiguousarray(letterboxed_bgr)], [planes[0], planes[1], planes[2]],
                    [0, 2, 1, 1, 2, 0])
    table = _scaled_grey_levels(np.dtype(dtype))
    cv2.LUT(planes.reshape(3 * height, width), table,
            dst=out.view(table.dtype).reshape(3 * height, width))
    return out
