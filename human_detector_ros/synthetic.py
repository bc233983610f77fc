"""A synthetic scene whose truth is known, for the demo and the tests (ROS-free).

The sample portraits (`astronaut.png`, `camera.png`) are pasted on a grey 1280x720 canvas as
two people; a matching depth image puts each at a chosen distance in front of a far
background. `walking_sequence()` scripts the frames the tracking demo and test send.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from human_detector_ros.assets import sample_image_path
from human_detector_ros.image_conversion import read_bgr

CANVAS_SHAPE = (720, 1280)
CANVAS_GREY = 114
BACKGROUND_DEPTH_M = 12.0
Rect = Tuple[int, int, int, int]


@dataclass(frozen=True)
class Person:
    """A portrait pasted with its top-left corner at (x, y), scaled by `scale`."""

    image: str
    x: int
    y: int
    scale: float = 1.0


@dataclass(frozen=True)
class Frame:
    """One frame of a sequence: its index, stamp (seconds from the start) and the people in
    view by name (hidden people are absent)."""

    index: int
    stamp_s: float
    people: Dict[str, Person] = field(default_factory=dict)


def _portrait(name: str, scale: float) -> np.ndarray:
    image = read_bgr(str(sample_image_path(name)))
    if scale == 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def render(people: Dict[str, Person]) -> Tuple[np.ndarray, Dict[str, Rect]]:
    """The canvas (HxWx3 uint8 BGR) and each person's pasted rectangle x1, y1, x2, y2."""
    canvas = np.full(CANVAS_SHAPE + (3,), CANVAS_GREY, np.uint8)
    rects = {}
    for name, person in people.items():
        portrait = _portrait(person.image, person.scale)
        height, width = portrait.shape[:2]
        canvas[person.y:person.y + height, person.x:person.x + width] = portrait
        rects[name] = (person.x, person.y, person.x + width, person.y + height)
    return canvas, rects


def depth_metres(rects: Dict[str, Rect], depths_m: Dict[str, Optional[float]],
                 background_m: float = BACKGROUND_DEPTH_M) -> np.ndarray:
    """HxW float32 metres: `background_m`, each person's rectangle at their depth (a flat
    plate); a person whose depth is None has no measurement (NaN) in their rectangle."""
    metres = np.full(CANVAS_SHAPE, background_m, np.float32)
    for name, (x1, y1, x2, y2) in rects.items():
        depth = depths_m.get(name)
        metres[y1:y2, x1:x2] = np.nan if depth is None else depth
    return metres


def encode_depth(metres: np.ndarray, encoding: str) -> Tuple[int, bytes]:
    """(step, data) of a little-endian sensor_msgs/Image: 16UC1 millimetres (0 = no depth)
    or 32FC1 metres (NaN = no depth)."""
    if encoding == '16UC1':
        values = np.where(np.isfinite(metres), np.round(metres * 1000.0), 0).astype('<u2')
    elif encoding == '32FC1':
        values = metres.astype('<f4')
    else:
        raise ValueError(f'unknown depth encoding {encoding!r}')
    return values.shape[1] * values.itemsize, values.tobytes()


def walking_sequence(fps: float = 10.0, hidden: Sequence[int] = (6, 7, 8),
                     dropped: Sequence[int] = (4, 13, 14), frames: int = 24) -> List[Frame]:
    """Two people walking towards each other, a few pixels a frame. `astronaut` walks right
    6 px a frame, is hidden in the `hidden` frames, and from frame 12 walks away (shrinks 5 %
    a frame down to 60 %); the default model's class for them flips from 1 "Fall" to 0
    "Normal" on the way (with agnostic NMS; see the tracking test). `camera` walks left 4 px a
    frame. The `dropped` frames are left out, as a lossy link would."""
    sequence = []
    for index in range(frames):
        if index in dropped:
            continue
        people = {'camera': Person('camera.png', 720 - 4 * index, 100)}
        if index not in hidden:
            scale = max(0.6, 1.0 - 0.05 * max(0, index - 11))
            people['astronaut'] = Person('astronaut.png', 40 + 6 * index, 100, round(scale, 2))
        sequence.append(Frame(index, index / fps, people))
    return sequence
