"""sensor_msgs/Image and CompressedImage payloads to HxWx3 uint8 BGR arrays, without ROS types.

`image_to_bgr` gives what cv_bridge's ``imgmsg_to_cv2(msg, 'bgr8')`` gives (vision_opencv
cv_bridge/src/cv_bridge.cpp: getConversionCodes, toCvCopyImpl, matFromImage; and
cv_bridge/python/cv_bridge/core.py: row padding and byte order), but checks every field before it
touches a pixel and raises `InvalidImageError` instead of crashing or reading out of bounds.
"""
from __future__ import annotations

import array
import re
import struct
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import cv2
import numpy as np

from human_detector_ros.errors import InvalidImageError

BytesLike = Union[bytes, bytearray, memoryview, array.array, np.ndarray]
"""array.array('B') is what rclpy gives; any C-contiguous buffer is read as bytes."""

MAX_DIMENSION = 16384
"""Largest accepted width or height in pixels; anything bigger is treated as a corrupt header."""

MAX_COMPRESSED_PIXELS = 8192 * 8192
"""Largest decoded size of a compressed image: a few hundred bytes can claim gigapixels."""

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SOI = b'\xff\xd8'
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT/JPG/DAC.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
# IMREAD_COLOR would turn the image as its EXIF Orientation says; image_transport does not.
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class _Encoding(NamedTuple):
    channels: int
    bytes_per_channel: int
    to_bgr: Optional[int]


# cv_bridge's conversion table; Bayer names follow it (rggb <-> OpenCV "BG", and so on).
# `channels` is samples per pixel in the message: 2 for packed YUV 4:2:2. 'uyvy' and 'yuyv' are
# sensor_msgs' newer names for the yuv422 and yuv422_yuy2 layouts; cv_bridge's getCvType does not
# list them, so there this module accepts more than cv_bridge.
_ENCODINGS: Dict[str, _Encoding] = {
    'bgr8': _Encoding(3, 1, None),
    'rgb8': _Encoding(3, 1, cv2.COLOR_RGB2BGR),
    'bgra8': _Encoding(4, 1, cv2.COLOR_BGRA2BGR),
    'rgba8': _Encoding(4, 1, cv2.COLOR_RGBA2BGR),
    'mono8': _Encoding(1, 1, cv2.COLOR_GRAY2BGR),
    'bgr16': _Encoding(3, 2, None),
    'rgb16': _Encoding(3, 2, cv2.COLOR_RGB2BGR),
    'bgra16': _Encoding(4, 2, cv2.COLOR_BGRA2BGR),
    'rgba16': _Encoding(4, 2, cv2.COLOR_RGBA2BGR),
    'mono16': _Encoding(1, 2, cv2.COLOR_GRAY2BGR),
    'bayer_rggb8': _Encoding(1, 1, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr8': _Encoding(1, 1, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg8': _Encoding(1, 1, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg8': _Encoding(1, 1, cv2.COLOR_BayerGB2BGR),
    'bayer_rggb16': _Encoding(1, 2, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr16': _Encoding(1, 2, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg16': _Encoding(1, 2, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg16': _Encoding(1, 2, cv2.COLOR_BayerGB2BGR),
    'yuv422': _Encoding(2, 1, cv2.COLOR_YUV2BGR_UYVY),
    'uyvy': _Encoding(2, 1, cv2.COLOR_YUV2BGR_UYVY),
    'yuv422_yuy2': _Encoding(2, 1, cv2.COLOR_YUV2BGR_YUY2),
    'yuyv': _Encoding(2, 1, cv2.COLOR_YUV2BGR_YUY2),
}

SUPPORTED_ENCODINGS = tuple(sorted(_ENCODINGS))

# Two neighbouring pixels share one chroma sample, so a row holds whole pixel pairs.
_PAIRED_CONVERSIONS = frozenset({cv2.COLOR_YUV2BGR_UYVY, cv2.COLOR_YUV2BGR_YUY2})

# cv_bridge's toCvCopyImpl scales 16-bit to 8-bit with convertTo(alpha=255/65535), rounding.
_SCALE_16_TO_8 = 255.0 / 65535.0

_GENERIC_ENCODING = re.compile(r'(8U|8S|16U|16S|32S|32F|64F)(C[0-9]+)?')


class ImageFields(NamedTuple):
    """The fields of a bgr8 sensor_msgs/Image (is_bigendian is irrelevant for 8-bit data).

    `data` is an array.array('B'): rclpy stores one as is, while bytes are converted again.
    """

    encoding: str
    height: int
    width: int
    step: int
    data: array.array


def image_to_bgr(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                 data: BytesLike) -> np.ndarray:
    """Convert a raw image payload to HxWx3 uint8 BGR, C-contiguous.

    `step` is the row length in bytes (row padding is skipped), `data` must hold at least
    height*step bytes (trailing bytes are ignored). 16-bit data is read in the byte order given by
    `is_bigendian` and scaled to 8 bits by 255/65535 after the colour conversion, as cv_bridge
    does. For bgr8 without row padding the result is a view over `data`, no copy: writeable when
    `data` is (bytearray, array.array as rclpy gives), read-only for bytes; it keeps `data`
    alive. Every other encoding returns a new array. Raises InvalidImageError.
    """
    info = _ENCODINGS.get(encoding)
    if info is None:
        raise InvalidImageError(_unknown_encoding_message(encoding))
    what = f'{encoding} {width}x{height}'
    _check_dimensions(height, width, what)
    row_bytes = width * info.channels * info.bytes_per_channel
    if step < row_bytes:
        raise InvalidImageError(f'step {step} < width*bytes_per_pixel {row_bytes} for {what}')
    if info.to_bgr in _PAIRED_CONVERSIONS and width % 2:
        raise InvalidImageError(f'odd width for {what}: YUV 4:2:2 rows hold pixel pairs')
    buffer = _byte_view(data)
    if buffer.nbytes < height * step:
        raise InvalidImageError(
            f'data has {buffer.nbytes} bytes < height*step {height * step} for {what}')

    pixels = _pixel_view(buffer, height, width, step, info, bool(is_bigendian))
    if info.bytes_per_channel == 2:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    bgr = pixels if info.to_bgr is None else cv2.cvtColor(pixels, info.to_bgr)
    if info.bytes_per_channel == 2:
        return cv2.convertScaleAbs(bgr, alpha=_SCALE_16_TO_8)
    return np.ascontiguousarray(bgr)


def image_msg_to_bgr(msg: Any) -> np.ndarray:
    """`image_to_bgr` over any object with the sensor_msgs/Image fields."""
    return image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                        msg.data)


def compressed_to_bgr(format: str, data: BytesLike) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage payload to HxWx3 uint8 BGR.

    `format` is what image_transport's compressed plugin writes: 'jpeg', 'png' or
    '<encoding>; jpeg compressed bgr8'. Like that plugin's subscriber, the codec is taken from the
    data itself (cv2.imdecode: BGR, grey expanded, alpha dropped, 16-bit reduced to 8); the
    compressed plugin stores colour images as BGR whatever the source encoding was. An EXIF
    Orientation (JPEG APP1, PNG eXIf) is ignored, as the plugin's IMREAD_UNCHANGED ignores it:
    the pixels keep the width and height the data declares, the frame cv_bridge, RViz and the
    camera's calibration use. compressedDepth payloads (a depth header before the PNG) are
    refused. Raises InvalidImageError for empty, undecodable or oversized data.
    """
    if 'compresseddepth' in format.lower():
        raise InvalidImageError(f'compressedDepth is a depth image, not colour: {format!r}')
    buffer = _byte_view(data)
    if buffer.nbytes == 0:
        raise InvalidImageError(f'empty compressed image (format {format!r})')
    what = f'{format!r} image'
    height, width = _compressed_size(buffer, what)
    _check_dimensions(height, width, what)
    if height * width > MAX_COMPRESSED_PIXELS:
        raise InvalidImageError(f'{what} claims {width}x{height} pixels, more than '
                                f'{MAX_COMPRESSED_PIXELS}')
    try:
        bgr = cv2.imdecode(np.frombuffer(buffer, dtype=np.uint8), _DECODE_FLAGS)
    except cv2.error as exc:
        raise InvalidImageError(
            f'cannot decode {buffer.nbytes}-byte compressed image (format {format!r}): '
            f'{str(exc).strip().splitlines()[-1]}') from exc
    if bgr is None:
        raise InvalidImageError(
            f'cannot decode {buffer.nbytes}-byte compressed image (format {format!r})')
    _check_dimensions(bgr.shape[0], bgr.shape[1], f'decoded {format!r} image')
    return bgr


def read_bgr(path: str) -> np.ndarray:
    """An image file as HxWx3 uint8 BGR (grey images are expanded)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidImageError(f'cannot read image {path}')
    return bgr


def compressed_msg_to_bgr(msg: Any) -> np.ndarray:
    """`compressed_to_bgr` over any object with the sensor_msgs/CompressedImage fields."""
    return compressed_to_bgr(msg.format, msg.data)


def bgr_to_image_fields(bgr: np.ndarray) -> ImageFields:
    """Fields of a bgr8 sensor_msgs/Image holding `bgr` (HxWx3 uint8), rows unpadded."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f'expected an HxWx3 uint8 BGR image, got {bgr.shape} {bgr.dtype}')
    height, width = int(bgr.shape[0]), int(bgr.shape[1])
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(bgr).data)
    return ImageFields('bgr8', height, width, width * 3, data)


def _unknown_encoding_message(encoding: str) -> str:
    if _GENERIC_ENCODING.fullmatch(encoding):
        return (f'encoding {encoding!r} has no colour order; cv_bridge refuses it for bgr8 too. '
                f'Publish one of: {", ".join(SUPPORTED_ENCODINGS)}')
    return f'unknown encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}'


def _compressed_size(data: memoryview, what: str) -> Tuple[int, int]:
    """(height, width) a PNG or JPEG declares, read before decoding so that a damaged or
    hostile header cannot make the decoder allocate gigabytes. InvalidImageError for data
    that is neither, or whose structure runs past its end."""
    start = bytes(data[:8])
    if start == _PNG_SIGNATURE:
        return _png_size(data, what)
    if start.startswith(_JPEG_SOI):
        return _jpeg_size(data, what)
    raise InvalidImageError(f'{what} is neither PNG nor JPEG (first bytes {start.hex()})')


def _png_size(data: memoryview, what: str) -> Tuple[int, int]:
    if len(data) < 24 or bytes(data[12:16]) != b'IHDR':
        raise InvalidImageError(f'{what}: PNG without an IHDR header')
    width, height = struct.unpack_from('>II', data, 16)
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from('>I4s', data, offset)
        offset += 12 + length
        if offset > len(data):
            raise InvalidImageError(f'{what}: PNG chunk {kind!r} of {length} bytes runs past '
                                    f'the {len(data)}-byte data')
        if kind == b'IEND':
            break
    return height, width


def _jpeg_size(data: memoryview, what: str) -> Tuple[int, int]:
    offset = len(_JPEG_SOI)
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise InvalidImageError(f'{what}: JPEG marker expected at byte {offset}')
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            offset += 2
            continue
        length = struct.unpack_from('>H', data, offset + 2)[0]
        if marker in _JPEG_SOF_MARKERS:
            if offset + 9 > len(data):
                break
            height, width = struct.unpack_from('>HH', data, offset + 5)
            return height, width
        if marker == 0xDA or length < 2:
            break
        offset += 2 + length
    raise InvalidImageError(f'{what}: JPEG without a frame header before its image data')


def _check_dimensions(height: int, width: int, what: str) -> None:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise InvalidImageError(
            f'size {width}x{height} outside 1..{MAX_DIMENSION} pixels for {what}')


def _byte_view(data: BytesLike) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidImageError(
            f'image data must be bytes-like, got {type(data).__name__}') from None
    if not view.c_contiguous:
        raise InvalidImageError('image data buffer is not contiguous')
    if view.format != 'B' or view.ndim != 1:
        view = view.cast('B')
    return view


def _pixel_view(buffer: memoryview, height: int, width: int, step: int, info: _Encoding,
                is_bigendian: bool) -> np.ndarray:
    """View the message rows as (H, W) or (H, W, C) samples, skipping row padding; no copy."""
    size = info.bytes_per_channel
    dtype = np.dtype(np.uint8) if size == 1 else np.dtype('>u2' if is_bigendian else '<u2')
    if info.channels == 1:
        return np.ndarray((height, width), dtype, buffer=buffer, strides=(step, size))
    return np.ndarray((height, width, info.channels), dtype, buffer=buffer,
                      strides=(step, info.channels * size, size))
