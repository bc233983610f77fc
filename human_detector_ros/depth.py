"""People's positions in metres from a depth image aligned to the colour image (ROS-free).

Depth images are `16UC1` (millimetres) or `32FC1` (metres), registered to the colour image:
pixel (u, v) of the depth image sees what pixel (u, v) of the colour image sees. Zero, NaN,
infinite and negative depths mean "no measurement" and are ignored.

A person's depth Z is taken from the central half (in width and height) of their box, which is
mostly torso (sampled on a grid of at most about SAMPLES pixels), and made robust to the holes
and the background behind them: the values within `0.3 m + 5 %` of the 25th percentile of the
valid depths there are the person's surface (the background lies farther, stray near pixels
are fewer than a quarter), and Z is their median (nearest-rank percentiles throughout).
The position is that of the box centre (u, v) at depth Z through the pinhole model of the
colour camera: `((u - cx) Z / fx, (v - cy) Z / fy, Z)`, in the camera's optical frame
(x right, y down, z forward).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Generic, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from human_detector_ros.errors import InvalidImageError
from human_detector_ros.image_conversion import _byte_view, _check_dimensions

DEPTH_ENCODINGS = ('16UC1', '32FC1')
SURFACE_PERCENTILE = 25.0
SURFACE_BAND_M = 0.3
SURFACE_BAND_RELATIVE = 0.05
MIN_VALID_FRACTION = 0.1
MIN_VALID_PIXELS = 10
SAMPLES = 2048


class DepthImage:
    """A depth image as stored in its message, read in metres on demand (no full copy).

    Raises InvalidImageError for an encoding other than DEPTH_ENCODINGS or fields that do not
    add up (size, step, data length), like the colour image converter.
    """

    def __init__(self, encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                 data: object) -> None:
        if encoding == '16UC1':
            dtype, self._scale = np.dtype('>u2' if is_bigendian else '<u2'), 0.001
        elif encoding == '32FC1':
            dtype, self._scale = np.dtype('>f4' if is_bigendian else '<f4'), 1.0
        else:
            raise InvalidImageError(
                f'depth encoding {encoding!r} is not supported; use one of '
                f'{", ".join(DEPTH_ENCODINGS)}')
        what = f'depth {encoding} {width}x{height}'
        _check_dimensions(height, width, what)
        if step < width * dtype.itemsize:
            raise InvalidImageError(f'step {step} < width*{dtype.itemsize} for {what}')
        buffer = _byte_view(data)
        if buffer.nbytes < height * step:
            raise InvalidImageError(
                f'data has {buffer.nbytes} bytes < height*step {height * step} for {what}')
        self._pixels = np.ndarray((height, width), dtype, buffer=buffer,
                                  strides=(step, dtype.itemsize))

    @classmethod
    def from_array(cls, pixels: np.ndarray) -> DepthImage:
        """From an (H, W) array as read from a depth image file: uint16 millimetres (16UC1)
        or float32 metres (32FC1). Raises InvalidImageError for any other array."""
        pixels = np.asarray(pixels)
        kind = f'{pixels.dtype.kind}{pixels.dtype.itemsize}'
        encoding = {'u2': '16UC1', 'f4': '32FC1'}.get(kind)
        if pixels.ndim != 2 or encoding is None:
            raise InvalidImageError(
                f'a depth image must be single-channel uint16 (millimetres) or float32 '
                f'(metres), got {pixels.shape} {pixels.dtype}')
        little = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder('<'))
        return cls(encoding, little.shape[0], little.shape[1], little.strides[0], False,
                   little.reshape(-1))

    @property
    def shape(self) -> Tuple[int, int]:
        """(height, width) in pixels."""
        return self._pixels.shape

    def metres(self, x1: int, y1: int, x2: int, y2: int, stride: int = 1) -> np.ndarray:
        """Depths of the pixels x1 <= x < x2, y1 <= y < y2 (every `stride`-th row and column)
        in metres, float32; NaN where the image has no measurement."""
        region = self._pixels[y1:y2:stride, x1:x2:stride].astype(np.float32)
        if self._scale != 1.0:
            region *= np.float32(self._scale)
        region[~(region > 0.0) | ~np.isfinite(region)] = np.nan
        return region

    def to_metres(self) -> np.ndarray:
        """The whole image in metres (H, W) float32, NaN where there is no measurement."""
        return self.metres(0, 0, self.shape[1], self.shape[0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole model of the colour camera, in pixels: sensor_msgs/CameraInfo's K matrix."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k: Sequence[float]) -> Intrinsics:
        """From the row-major 3x3 K; raises ValueError when it is not a calibration (an
        uncalibrated camera publishes zeros)."""
        values = [float(value) for value in k]
        if len(values) != 9:
            raise ValueError(f'K must have 9 elements, got {len(values)}')
        intrinsics = cls(fx=values[0], fy=values[4], cx=values[2], cy=values[5])
        if not all(math.isfinite(value) for value in values) or \
                intrinsics.fx <= 0.0 or intrinsics.fy <= 0.0:
            raise ValueError(f'K is not a calibration (fx={intrinsics.fx}, fy={intrinsics.fy})')
        return intrinsics


@dataclass(frozen=True)
class PersonPosition:
    """Where one person is, in metres, in the colour camera's optical frame.

    x, y, z: the box centre at the person's depth. width, height: the box's size at that
    depth. depth_extent: the spread (5th to 95th percentile) of the person's surface depths.
    """

    x: float
    y: float
    z: float
    width: float
    height: float
    depth_extent: float


@dataclass(frozen=True)
class DepthFrame:
    """A depth image aligned to one colour frame, with the colour camera's calibration.

    info_size: (width, height) the calibration was made for, as in sensor_msgs/CameraInfo;
    (0, 0) when unknown.
    """

    image: DepthImage
    intrinsics: Intrinsics
    info_size: Tuple[int, int] = (0, 0)

    def problem_with(self, image_shape: Sequence[int]) -> Optional[str]:
        """Why this depth cannot locate people in a colour image of `image_shape` (H, W, ...),
        or None when it can (the same size as the image and the calibration)."""
        height, width = int(image_shape[0]), int(image_shape[1])
        if self.image.shape == (height, width) and self.info_size in ((0, 0), (width, height)):
            return None
        depth = f'depth {self.image.shape[1]}x{self.image.shape[0]}'
        if self.info_size == (0, 0):  # a calibration of unknown size
            return f'{depth} does not match the image {width}x{height}'
        return (f'{depth} / camera_info {self.info_size[0]}x{self.info_size[1]} do not match '
                f'the image {width}x{height}')


def surface_depth(region_m: np.ndarray) -> Optional[Tuple[float, float]]:
    """(Z, extent) in metres of the person seen in `region_m` (any shape, NaN = no depth), or
    None when fewer than MIN_VALID_FRACTION of its pixels (at least MIN_VALID_PIXELS) hold a
    depth. See the module docstring for the method."""
    values = np.sort(region_m[np.isfinite(region_m)])
    if values.size < max(MIN_VALID_PIXELS, MIN_VALID_FRACTION * region_m.size):
        return None
    anchor = float(values[round(SURFACE_PERCENTILE / 100.0 * (values.size - 1))])
    band = SURFACE_BAND_M + SURFACE_BAND_RELATIVE * anchor
    first, end = np.searchsorted(values, (anchor - band, anchor + band), side='right')
    surface = values[first:end]
    count = surface.size
    z = 0.5 * (float(surface[(count - 1) // 2]) + float(surface[count // 2]))
    return z, float(surface[round(0.95 * (count - 1))] - surface[round(0.05 * (count - 1))])


def locate_person(depth: DepthImage, box: Sequence[float],
                  intrinsics: Intrinsics) -> Optional[PersonPosition]:
    """The position of the person in `box` (x1, y1, x2, y2 in colour pixels), or None when
    the depth image has no usable depth there."""
    x1, y1, x2, y2 = (float(value) for value in box)
    width_px, height_px = x2 - x1, y2 - y1
    rows, columns = depth.shape
    left = min(max(int(round(x1 + width_px / 4)), 0), columns)
    right = min(max(int(round(x2 - width_px / 4)), left + 1), columns)
    top = min(max(int(round(y1 + height_px / 4)), 0), rows)
    bottom = min(max(int(round(y2 - height_px / 4)), top + 1), rows)
    if left >= right or top >= bottom:
        return None
    stride = max(1, math.ceil(math.sqrt((right - left) * (bottom - top) / SAMPLES)))
    found = surface_depth(depth.metres(left, top, right, bottom, stride))
    if found is None:
        return None
    z, extent = found
    u, v = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return PersonPosition(
        x=(u - intrinsics.cx) * z / intrinsics.fx, y=(v - intrinsics.cy) * z / intrinsics.fy,
        z=z, width=width_px * z / intrinsics.fx, height=height_px * z / intrinsics.fy,
        depth_extent=extent)


def locate_people(depth: DepthImage, boxes: np.ndarray,
                  intrinsics: Intrinsics) -> List[Optional[PersonPosition]]:
    """`locate_person` for each row of `boxes` (N, 4)."""
    return [locate_person(depth, box, intrinsics) for box in np.asarray(boxes).reshape(-1, 4)]


T = TypeVar('T')


class StampBuffer(Generic[T]):
    """The last `capacity` items of a stream (e.g. depth frames) by stamp in nanoseconds;
    `nearest` finds the one closest to a stamp within a tolerance. Not thread-safe."""

    def __init__(self, capacity: int = 10) -> None:
        self._items: Deque[Tuple[int, T]] = deque(maxlen=capacity)

    def add(self, stamp_ns: int, item: T) -> None:
        self._items.append((stamp_ns, item))

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> Optional[T]:
        """The item whose stamp is nearest `stamp_ns`, if at most `tolerance_ns` away."""
        best: Optional[Tuple[int, T]] = None
        for stamp, item in self._items:
            distance = abs(stamp - stamp_ns)
            if distance <= tolerance_ns and (best is None or distance < best[0]):
                best = (distance, item)
        return None if best is None else best[1]

    def __len__(self) -> int:
        return len(self._items)
