"""Draw detections on a BGR image: a box and a "name score" label per detection.

Line width, font size and palette follow Ultralytics' Annotator so the node's annotated images
look like `yolo predict` output.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple, TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from human_detector_ros.postprocess import Detections

Color = Tuple[int, int, int]

_PALETTE_RGB_HEX = (
    'FF3838', 'FF9D97', 'FF701F', 'FFB21D', 'CFD231', '48F90A', '92CC17', '3DDB86', '1A9334',
    '00D4BB', '2C99A8', '00C2FF', '344593', '6473FF', '0018EC', '8438FF', '520085', 'CB38FF',
    'FF95C8', 'FF37C7')
_PALETTE_BGR: Tuple[Color, ...] = tuple(
    (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)) for h in _PALETTE_RGB_HEX)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_DARK_TEXT: Color = (0, 0, 0)
_LIGHT_TEXT: Color = (255, 255, 255)


def class_color(class_id: int) -> Color:
    """BGR colour of a class: Ultralytics' 20-colour palette, cycled."""
    return _PALETTE_BGR[int(class_id) % len(_PALETTE_BGR)]


def line_width(shape: Sequence[int]) -> int:
    """Box line width in pixels for an image of `shape` (H, W, C), as Ultralytics computes it."""
    return max(round(sum(shape) / 2 * 0.003), 2)


def draw_detections(bgr: np.ndarray, detections: Detections, names: Mapping[int, str],
                    extra_labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Return a copy of `bgr` (HxWx3 uint8) with each detection drawn; `bgr` is not modified.

    `detections` needs boxes (N, 4) xyxy in pixels of `bgr`, scores (N,) and class_ids (N,).
    Boxes are rounded to whole pixels and clipped to the image; a class id missing from `names`
    is labelled with its number. `extra_labels`, one string per detection (e.g. track id and
    distance), is appended to the label when not empty. Labels sit above the box, or inside it
    when there is no room, and are moved to stay inside the image.
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f'expected an HxWx3 uint8 BGR image, got {bgr.shape} {bgr.dtype}')
    out = np.array(bgr, dtype=np.uint8, order='C', copy=True)
    height, width = out.shape[:2]
    thickness = line_width(out.shape)
    boxes = np.rint(np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4))
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height - 1)
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(detections.class_ids, dtype=np.int64).reshape(-1)
    extras = list(extra_labels) if extra_labels is not None else [''] * len(scores)
    for box, score, class_id, extra in zip(boxes.astype(np.int64).tolist(), scores.tolist(),
                                           class_ids.tolist(), extras):
        x1, y1, x2, y2 = box
        color = class_color(class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f'{names.get(class_id, str(class_id))} {score:.2f}'
        if extra:
            label += f' {extra}'
        _draw_label(out, label, (x1, y1), color, thickness)
    return out


def track_labels(ids: Sequence[str], distances_m: Sequence[Optional[float]]) -> List[str]:
    """`extra_labels` for tracked people: `#id` and the distance, e.g. `#3 2.41m`; either
    part is left out when the id is empty or the distance None."""
    return [' '.join(part for part in (f'#{track_id}' if track_id else '',
                                       f'{distance:.2f}m' if distance is not None else '')
                     if part)
            for track_id, distance in zip(ids, distances_m)]


def _draw_label(image: np.ndarray, label: str, corner: Tuple[int, int], color: Color,
                thickness: int) -> None:
    """Filled label at the box's top-left `corner`, kept inside the image."""
    font_scale = thickness / 3
    font_thickness = max(thickness - 1, 1)
    (text_w, text_h), _ = cv2.getTextSize(label, _FONT, font_scale, font_thickness)
    text_h += 3
    height, width = image.shape[:2]
    x, y = corner
    top = y - text_h if y >= text_h else y
    left = min(max(x, 0), max(width - text_w, 0))
    top = min(top, max(height - text_h, 0))
    cv2.rectangle(image, (left, top), (left + text_w, top + text_h), color, -1, cv2.LINE_AA)
    cv2.putText(image, label, (left, top + text_h - 2), _FONT, font_scale, _text_color(color),
                font_thickness, cv2.LINE_AA)


def _text_color(background: Color) -> Color:
    blue, green, red = background
    return _DARK_TEXT if 0.299 * red + 0.587 * green + 0.114 * blue > 160 else _LIGHT_TEXT
