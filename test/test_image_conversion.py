"""Raw and compressed image payloads -> BGR, checked on pixels whose right value is known."""
from __future__ import annotations

import array
import struct
from types import SimpleNamespace
from typing import Callable, Dict, Tuple

import cv2
import numpy as np
import pytest
from exif_images import with_exif_orientation

from human_detector_ros.errors import InvalidImageError
from human_detector_ros.image_conversion import (
    bgr_to_image_fields, compressed_msg_to_bgr, compressed_to_bgr, image_msg_to_bgr,
    image_to_bgr, MAX_DIMENSION, SUPPORTED_ENCODINGS)

PADDING_BYTE = 0xA5
SIZES = [(6, 8), (5, 7), (1, 1)]
PADDINGS = [0, 3, 64]


def known_bgr(height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 with a different value in nearly every sample."""
    values = np.arange(height * width * 3, dtype=np.int64) * 37 + 11
    return (values % 256).astype(np.uint8).reshape(height, width, 3)


def message_bytes(samples: np.ndarray, padding: int, is_bigendian: bool) -> Tuple[int, bytes]:
    """(step, data) of a message holding `samples` (H, W[, C]) rows, each followed by padding."""
    if samples.dtype == np.uint16:
        samples = samples.astype('>u2' if is_bigendian else '<u2')
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(samples.shape[0], -1)
    step = rows.shape[1] + padding
    padded = np.full((rows.shape[0], step), PADDING_BYTE, dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return step, padded.tobytes()


def gray_of(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., 1]


def alpha_of(bgr: np.ndarray) -> np.ndarray:
    return (255 - bgr[..., :1]).astype(np.uint8)


# Message samples built from a known BGR image, and the BGR image the conversion must give.
PLAIN_ENCODINGS: Dict[str, Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]] = {
    'bgr8': lambda bgr: (bgr, bgr),
    'rgb8': lambda bgr: (bgr[..., ::-1], bgr),
    'bgra8': lambda bgr: (np.concatenate([bgr, alpha_of(bgr)], axis=2), bgr),
    'rgba8': lambda bgr: (np.concatenate([bgr[..., ::-1], alpha_of(bgr)], axis=2), bgr),
    'mono8': lambda bgr: (gray_of(bgr), np.repeat(gray_of(bgr)[..., None], 3, axis=2)),
}
# 257 * v is exactly v after cv_bridge's 255/65535 scaling.
WIDE_ENCODINGS: Dict[str, str] = {
    'bgr16': 'bgr8', 'rgb16': 'rgb8', 'bgra16': 'bgra8', 'rgba16': 'rgba8', 'mono16': 'mono8'}

BAYER_PATTERNS = {'rggb': 'RGGB', 'bggr': 'BGGR', 'gbrg': 'GBRG', 'grbg': 'GRBG'}
# cv_bridge's table, restated to compare against OpenCV directly.
BAYER_CODES = {'rggb': cv2.COLOR_BayerBG2BGR, 'bggr': cv2.COLOR_BayerRG2BGR,
               'gbrg': cv2.COLOR_BayerGR2BGR, 'grbg': cv2.COLOR_BayerGB2BGR}
BLOCK_COLORS = np.array([[30, 90, 220], [200, 40, 70], [10, 250, 128], [180, 180, 20]],
                        dtype=np.uint8)


def convert(encoding: str, samples: np.ndarray, padding: int = 0,
            is_bigendian: bool = False) -> np.ndarray:
    step, data = message_bytes(samples, padding, is_bigendian)
    return image_to_bgr(encoding, samples.shape[0], samples.shape[1], step, is_bigendian, data)


def assert_bgr_image(out: np.ndarray, height: int, width: int) -> None:
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


def test_every_supported_encoding_is_tested() -> None:
    tested = (set(PLAIN_ENCODINGS) | set(WIDE_ENCODINGS)
              | {f'bayer_{p}{bits}' for p in BAYER_PATTERNS for bits in (8, 16)}
              | {'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'})
    assert tested == set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('height,width', SIZES)
@pytest.mark.parametrize('encoding', sorted(PLAIN_ENCODINGS))
def test_8bit_encodings(encoding: str, height: int, width: int, padding: int) -> None:
    samples, expected = PLAIN_ENCODINGS[encoding](known_bgr(height, width))
    for is_bigendian in (False, True):
        out = convert(encoding, samples, padding, is_bigendian)
        assert_bgr_image(out, height, width)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('is_bigendian', [False, True])
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('height,width', SIZES)
@pytest.mark.parametrize('encoding', sorted(WIDE_ENCODINGS))
def test_16bit_encodings(encoding: str, height: int, width: int, padding: int,
                         is_bigendian: bool) -> None:
    samples8, expected = PLAIN_ENCODINGS[WIDE_ENCODINGS[encoding]](known_bgr(height, width))
    samples = samples8.astype(np.uint16) * 257
    out = convert(encoding, samples, padding, is_bigendian)
    assert_bgr_image(out, height, width)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('is_bigendian', [False, True])
def test_16bit_scaling_rounds_every_value_like_cv_bridge(is_bigendian: bool) -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = convert('mono16', values, padding=2, is_bigendian=is_bigendian)
    expected = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_16bit_byte_order_matters() -> None:
    # Bytes 30 20 | 00 ff: 0x2030 = 8240 -> 32 and 0xff00 = 65280 -> 254 read little-endian,
    # 0x3020 = 12320 -> 48 and 0x00ff = 255 -> 1 read big-endian.
    data = bytes([0x30, 0x20, 0x00, 0xFF])
    as_little = image_to_bgr('mono16', 1, 2, 4, False, data)
    as_big = image_to_bgr('mono16', 1, 2, 4, True, data)
    np.testing.assert_array_equal(as_little[0], [[32] * 3, [254] * 3])
    np.testing.assert_array_equal(as_big[0], [[48] * 3, [1] * 3])


def block_image(height: int, width: int) -> np.ndarray:
    """Four flat quadrants of BLOCK_COLORS (BGR)."""
    bgr = np.empty((height, width, 3), dtype=np.uint8)
    top, left = height // 2, width // 2
    bgr[:top, :left], bgr[:top, left:] = BLOCK_COLORS[0], BLOCK_COLORS[1]
    bgr[top:, :left], bgr[top:, left:] = BLOCK_COLORS[2], BLOCK_COLORS[3]
    return bgr


def block_interiors(height: int, width: int, margin: int = 2):
    top, left = height // 2, width // 2
    yield (slice(margin, top - margin), slice(margin, left - margin)), BLOCK_COLORS[0]
    yield (slice(margin, top - margin), slice(left + margin, width - margin)), BLOCK_COLORS[1]
    yield (slice(top + margin, height - margin), slice(margin, left - margin)), BLOCK_COLORS[2]
    yield ((slice(top + margin, height - margin), slice(left + margin, width - margin)),
           BLOCK_COLORS[3])


def bayer_mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """Sample each pixel's colour through a 2x2 filter pattern such as 'RGGB' (row-major)."""
    channel = {'B': 0, 'G': 1, 'R': 2}
    mosaic = np.empty(bgr.shape[:2], dtype=bgr.dtype)
    for index, letter in enumerate(pattern):
        dy, dx = divmod(index, 2)
        mosaic[dy::2, dx::2] = bgr[dy::2, dx::2, channel[letter]]
    return mosaic


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('height,width', [(16, 20), (15, 19)])
@pytest.mark.parametrize('pattern', sorted(BAYER_PATTERNS))
def test_bayer8(pattern: str, height: int, width: int, padding: int) -> None:
    mosaic = bayer_mosaic(block_image(height, width), BAYER_PATTERNS[pattern])
    out = convert(f'bayer_{pattern}8', mosaic, padding)
    assert_bgr_image(out, height, width)
    np.testing.assert_array_equal(out, cv2.cvtColor(mosaic, BAYER_CODES[pattern]))
    for region, color in block_interiors(height, width):
        assert (out[region] == color).all(), (region, color)


@pytest.mark.parametrize('is_bigendian', [False, True])
@pytest.mark.parametrize('padding', [0, 3])
@pytest.mark.parametrize('height,width', [(16, 20), (15, 19)])
@pytest.mark.parametrize('pattern', sorted(BAYER_PATTERNS))
def test_bayer16(pattern: str, height: int, width: int, padding: int,
                 is_bigendian: bool) -> None:
    # Arbitrary 16-bit values: demosaicing before scaling (as cv_bridge does) rounds differently
    # from scaling first.
    mosaic = np.random.default_rng(7).integers(0, 65536, size=(height, width), dtype=np.uint16)
    out = convert(f'bayer_{pattern}16', mosaic, padding, is_bigendian)
    assert_bgr_image(out, height, width)
    # cv_bridge: demosaic at 16 bits, then convertTo(CV_8U, 255/65535).
    demosaiced = cv2.cvtColor(mosaic, BAYER_CODES[pattern]).astype(np.float64)
    np.testing.assert_array_equal(out, np.floor(demosaiced * 255 / 65535 + 0.5))
    flat = bayer_mosaic(block_image(height, width).astype(np.uint16) * 257,
                        BAYER_PATTERNS[pattern])
    flat_out = convert(f'bayer_{pattern}16', flat, padding, is_bigendian)
    for region, color in block_interiors(height, width):
        assert (flat_out[region] == color).all(), (region, color)


def uyvy_from_yuv(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pack full-resolution Y (H, W) and per-pair U, V (H, W/2) as UYVY samples (H, W, 2)."""
    height, width = y.shape
    packed = np.empty((height, width // 2, 4), dtype=np.uint8)
    packed[..., 0], packed[..., 1] = u, y[:, 0::2]
    packed[..., 2], packed[..., 3] = v, y[:, 1::2]
    return packed.reshape(height, width, 2)


def uyvy_to_yuyv(uyvy: np.ndarray) -> np.ndarray:
    height, width = uyvy.shape[:2]
    return uyvy.reshape(height, width // 2, 4)[..., [1, 0, 3, 2]].reshape(height, width, 2)


YUV_ENCODINGS = {'yuv422': 'uyvy', 'uyvy': 'uyvy', 'yuv422_yuy2': 'yuyv', 'yuyv': 'yuyv'}


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('height', [4, 5])
@pytest.mark.parametrize('encoding', sorted(YUV_ENCODINGS))
def test_yuv422_gray_levels_are_exact(encoding: str, height: int, padding: int) -> None:
    # BT.601 video range with neutral chroma: R = G = B = 1.164 * (Y - 16).
    y_levels = np.array([16, 235, 126, 60], dtype=np.uint8)
    y = np.repeat(y_levels, 2)[None, :].repeat(height, axis=0)
    neutral = np.full((height, 4), 128, dtype=np.uint8)
    uyvy = uyvy_from_yuv(y, neutral, neutral)
    samples = uyvy if YUV_ENCODINGS[encoding] == 'uyvy' else uyvy_to_yuyv(uyvy)
    out = convert(encoding, samples, padding)
    assert_bgr_image(out, height, 8)
    expected = np.clip(np.floor(1.164 * (y.astype(np.float64) - 16) + 0.5), 0, 255)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))
    assert (out[:, 0:2] == 0).all() and (out[:, 2:4] == 255).all()


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('height,width', [(16, 20), (15, 18)])
@pytest.mark.parametrize('encoding', sorted(YUV_ENCODINGS))
def test_yuv422_colours(encoding: str, height: int, width: int, padding: int) -> None:
    bgr = block_image(height, width)
    uyvy = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_UYVY)
    code = cv2.COLOR_YUV2BGR_UYVY
    samples = uyvy
    if YUV_ENCODINGS[encoding] == 'yuyv':
        samples, code = uyvy_to_yuyv(uyvy), cv2.COLOR_YUV2BGR_YUY2
    out = convert(encoding, samples, padding)
    assert_bgr_image(out, height, width)
    np.testing.assert_array_equal(out, cv2.cvtColor(np.ascontiguousarray(samples), code))
    for region, color in block_interiors(height, width):
        difference = np.abs(out[region].astype(int) - color.astype(int))
        assert difference.max() <= 3, (region, color)


@pytest.mark.parametrize('make_buffer', [
    bytes, bytearray, memoryview, lambda data: array.array('B', data),
    lambda data: np.frombuffer(data, dtype=np.uint8)])
def test_buffer_types(make_buffer: Callable[[bytes], object]) -> None:
    bgr = known_bgr(5, 7)
    for encoding, (samples, expected) in (('rgb8', (bgr[..., ::-1], bgr)), ('bgr8', (bgr, bgr))):
        for padding in (0, 3):
            step, data = message_bytes(samples, padding, False)
            out = image_to_bgr(encoding, 5, 7, step, False, make_buffer(data))
            np.testing.assert_array_equal(out, expected)


def test_memoryview_of_wider_items_is_read_as_bytes() -> None:
    bgr = known_bgr(2, 4)
    words = array.array('H')
    words.frombytes(bgr.tobytes())
    out = image_to_bgr('bgr8', 2, 4, 12, False, memoryview(words))
    np.testing.assert_array_equal(out, bgr)


def test_trailing_bytes_are_ignored() -> None:
    bgr = known_bgr(6, 8)
    for encoding, samples in (('bgr8', bgr), ('rgb8', bgr[..., ::-1])):
        step, data = message_bytes(samples, 0, False)
        out = image_to_bgr(encoding, 6, 8, step, False, data + b'\x01\x02\x03extra')
        np.testing.assert_array_equal(out, bgr)


def test_bgr8_without_padding_is_a_view_of_the_buffer() -> None:
    bgr = known_bgr(6, 8)
    data = array.array('B', bgr.tobytes())
    out = image_to_bgr('bgr8', 6, 8, 24, False, data)
    assert np.shares_memory(out, np.frombuffer(data, dtype=np.uint8))
    assert out.flags.writeable
    out[0, 0] = (1, 2, 3)
    assert data[:3].tolist() == [1, 2, 3]

    readonly = image_to_bgr('bgr8', 6, 8, 24, False, bgr.tobytes())
    assert not readonly.flags.writeable
    np.testing.assert_array_equal(readonly, bgr)


def test_bgr8_with_padding_is_a_contiguous_copy() -> None:
    bgr = known_bgr(6, 8)
    step, data = message_bytes(bgr, 4, False)
    buffer = array.array('B', data)
    out = image_to_bgr('bgr8', 6, 8, step, False, buffer)
    assert out.flags.c_contiguous
    assert not np.shares_memory(out, np.frombuffer(buffer, dtype=np.uint8))
    np.testing.assert_array_equal(out, bgr)


def test_other_encodings_never_alias_the_buffer() -> None:
    bgr = known_bgr(6, 8)
    buffer = array.array('B', bgr[..., ::-1].tobytes())
    out = image_to_bgr('rgb8', 6, 8, 24, False, buffer)
    assert not np.shares_memory(out, np.frombuffer(buffer, dtype=np.uint8))


def test_image_msg_to_bgr_reads_any_object_with_image_fields() -> None:
    bgr = known_bgr(5, 7)
    step, data = message_bytes(bgr[..., ::-1], 3, False)
    msg = SimpleNamespace(encoding='rgb8', height=5, width=7, step=step, is_bigendian=0,
                          data=array.array('B', data))
    np.testing.assert_array_equal(image_msg_to_bgr(msg), bgr)


def test_real_sensor_msgs_image() -> None:
    sensor_msgs = pytest.importorskip('sensor_msgs.msg')
    bgr = known_bgr(5, 7)
    step, data = message_bytes(bgr[..., ::-1], 1, False)
    msg = sensor_msgs.Image(height=5, width=7, encoding='rgb8', is_bigendian=0, step=step,
                            data=data)
    np.testing.assert_array_equal(image_msg_to_bgr(msg), bgr)
    fields = bgr_to_image_fields(bgr)
    out_msg = sensor_msgs.Image(encoding=fields.encoding, height=fields.height,
                                width=fields.width, step=fields.step, data=fields.data)
    np.testing.assert_array_equal(image_msg_to_bgr(out_msg), bgr)


def raises_invalid(match: str):
    return pytest.raises(InvalidImageError, match=match)


@pytest.mark.parametrize('height,width', [(0, 8), (6, 0), (-1, 8), (6, -2),
                                          (MAX_DIMENSION + 1, 8), (6, MAX_DIMENSION + 1)])
def test_bad_sizes_raise(height: int, width: int) -> None:
    step = max(width, 1) * 3
    with raises_invalid('outside 1..'):
        image_to_bgr('bgr8', height, width, step, False, bytes(max(height, 1) * step))


def test_largest_size_is_accepted() -> None:
    out = image_to_bgr('mono8', 1, MAX_DIMENSION, MAX_DIMENSION, False, bytes(MAX_DIMENSION))
    assert out.shape == (1, MAX_DIMENSION, 3)


@pytest.mark.parametrize('encoding,row_bytes', [('bgr8', 24), ('mono16', 16), ('rgba16', 64),
                                                ('yuyv', 16), ('bayer_grbg8', 8)])
def test_short_step_raises(encoding: str, row_bytes: int) -> None:
    with raises_invalid(f'step {row_bytes - 1} < width\\*bytes_per_pixel {row_bytes} for '
                        f'{encoding} 8x6'):
        image_to_bgr(encoding, 6, 8, row_bytes - 1, False, bytes(6 * row_bytes))


@pytest.mark.parametrize('missing', [1, 24, 6 * 30])
def test_truncated_data_raises(missing: int) -> None:
    with raises_invalid(f'data has {180 - missing} bytes < height\\*step 180'):
        image_to_bgr('bgr8', 6, 8, 30, False, bytes(6 * 30 - missing))


@pytest.mark.parametrize('encoding', ['foo', '', 'BGR8', 'nv21', 'nv12'])
def test_unknown_encoding_raises(encoding: str) -> None:
    with raises_invalid('unknown encoding'):
        image_to_bgr(encoding, 6, 8, 24, False, bytes(6 * 24))


@pytest.mark.parametrize('encoding', ['8UC3', '8UC1', '16UC1', '32FC1', '8UC4'])
def test_generic_cv_encodings_are_refused_like_cv_bridge(encoding: str) -> None:
    with raises_invalid('has no colour order'):
        image_to_bgr(encoding, 6, 8, 128, False, bytes(6 * 128))


@pytest.mark.parametrize('encoding', sorted(YUV_ENCODINGS))
def test_odd_width_yuv422_raises(encoding: str) -> None:
    with raises_invalid('odd width'):
        image_to_bgr(encoding, 4, 7, 14, False, bytes(4 * 14))


@pytest.mark.parametrize('data', [[0] * 144, 'x' * 144, None, 144])
def test_non_buffer_data_raises(data: object) -> None:
    with raises_invalid('bytes-like'):
        image_to_bgr('bgr8', 6, 8, 24, False, data)


def test_non_contiguous_buffer_raises() -> None:
    with raises_invalid('not contiguous'):
        image_to_bgr('bgr8', 6, 8, 24, False, memoryview(bytes(288))[::2])


def test_validation_happens_before_any_pixel_is_read() -> None:
    # The header claims far more than the buffer holds: refused without touching memory.
    with raises_invalid('bytes < height\\*step'):
        image_to_bgr('bgr16', 10000, 10000, 60000, False, bytes(100))


# Compressed images.

def smooth_bgr(height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1),
                     (xx + yy) * 255 // (width + height - 2)], axis=2).astype(np.uint8)


def encoded(extension: str, image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(extension, image, list(params))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize('format', ['png', 'bgr8; png compressed bgr8',
                                    'rgb8; png compressed bgr8', 'PNG', ''])
def test_png_round_trip_is_exact(format: str) -> None:
    bgr = known_bgr(13, 17)
    out = compressed_to_bgr(format, encoded('.png', bgr))
    assert_bgr_image(out, 13, 17)
    np.testing.assert_array_equal(out, bgr)


@pytest.mark.parametrize('format', ['jpeg', 'bgr8; jpeg compressed bgr8',
                                    'rgb8; jpeg compressed bgr8',
                                    'yuv422_yuy2; jpeg compressed bgr8'])
def test_jpeg_round_trip_is_close(format: str) -> None:
    bgr = smooth_bgr()
    data = encoded('.jpg', bgr, cv2.IMWRITE_JPEG_QUALITY, 95)
    out = compressed_to_bgr(format, array.array('B', data))
    assert_bgr_image(out, 48, 64)
    difference = np.abs(out.astype(int) - bgr.astype(int))
    assert difference.mean() < 2.0 and difference.max() <= 16


def test_gray_and_alpha_png_decode_to_bgr() -> None:
    bgr = known_bgr(9, 11)
    gray = bgr[..., 1].copy()
    out = compressed_to_bgr('mono8; png compressed mono8', encoded('.png', gray))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    bgra = np.concatenate([bgr, alpha_of(bgr)], axis=2)
    out = compressed_to_bgr('bgra8; png compressed bgra8', encoded('.png', bgra))
    np.testing.assert_array_equal(out, bgr)


ORIENTATIONS = range(1, 9)
"""Every EXIF Orientation value: 1 is upright, 6 and 8 swap width and height, 3 turns 180."""


@pytest.mark.parametrize('orientation', ORIENTATIONS)
@pytest.mark.parametrize('extension', ['.jpg', '.png'])
def test_exif_orientation_is_ignored_as_image_transport_does(extension: str,
                                                             orientation: int) -> None:
    bgr = smooth_bgr(24, 64)
    plain = encoded(extension, bgr)
    tagged = with_exif_orientation(plain, orientation)
    out = compressed_to_bgr(extension[1:], tagged)
    assert_bgr_image(out, 24, 64)
    np.testing.assert_array_equal(out, compressed_to_bgr(extension[1:], plain))
    # What image_transport's compressed plugin decodes: the stored pixels, never turned.
    np.testing.assert_array_equal(
        out, cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_UNCHANGED))


def grey16_of(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., 1].astype(np.uint16) * 257 + 3


@pytest.mark.parametrize('name, samples', [
    ('mono8 png', lambda bgr: bgr[..., 1].copy()),
    ('mono16 png', grey16_of),
    ('bgra8 png', lambda bgr: np.concatenate([bgr, alpha_of(bgr)], axis=2)),
    ('bgr16 png', lambda bgr: bgr.astype(np.uint16) * 257),
    ('mono8 jpeg', lambda bgr: bgr[..., 1].copy()),
])
def test_exif_orientation_is_ignored_for_grey_alpha_and_16_bit_images(
        name: str, samples: Callable[[np.ndarray], np.ndarray]) -> None:
    bgr = known_bgr(10, 26)
    plain = encoded('.jpg' if 'jpeg' in name else '.png', samples(bgr))
    out = compressed_to_bgr(name, with_exif_orientation(plain, 6))
    assert_bgr_image(out, 10, 26)
    np.testing.assert_array_equal(out, compressed_to_bgr(name, plain))


def test_compressed_msg_to_bgr_reads_any_object_with_compressed_fields() -> None:
    bgr = known_bgr(6, 8)
    msg = SimpleNamespace(format='png', data=array.array('B', encoded('.png', bgr)))
    np.testing.assert_array_equal(compressed_msg_to_bgr(msg), bgr)


@pytest.mark.parametrize('data,match', [
    (b'', 'empty'),
    (b'definitely not an image', 'neither PNG nor JPEG'),
    (bytes(range(256)) * 4, 'neither PNG nor JPEG'),
])
def test_bad_compressed_data_raises(data: bytes, match: str) -> None:
    with raises_invalid(match):
        compressed_to_bgr('jpeg', data)


def test_truncated_png_raises() -> None:
    with raises_invalid('cannot decode'):
        compressed_to_bgr('png', encoded('.png', known_bgr(20, 20))[:40])


def _with_png_chunk_length(png: bytes, chunk: bytes, length: int) -> bytes:
    at = png.index(chunk) - 4
    return png[:at] + struct.pack('>I', length) + png[at + 4:]


def _with_jpeg_frame_size(jpeg: bytes, height: int, width: int) -> bytes:
    at = jpeg.index(b'\xff\xc0') + 5
    return jpeg[:at] + struct.pack('>HH', height, width) + jpeg[at + 4:]


def test_headers_claiming_huge_images_are_refused_before_decoding() -> None:
    png = encoded('.png', known_bgr(20, 20))
    jpeg = encoded('.jpg', known_bgr(20, 20))
    with raises_invalid('runs past'):
        compressed_to_bgr('png', _with_png_chunk_length(png, b'IDAT', 2147483758))
    with raises_invalid('outside'):
        compressed_to_bgr('png', png[:16] + struct.pack('>II', 100000, 100000) + png[24:])
    with raises_invalid('more than'):
        compressed_to_bgr('jpeg', _with_jpeg_frame_size(jpeg, 16000, 16000))
    np.testing.assert_array_equal(
        compressed_to_bgr('jpeg', _with_jpeg_frame_size(jpeg, 20, 20)),
        compressed_to_bgr('jpeg', jpeg))


def test_jpeg_without_a_frame_header_is_refused() -> None:
    jpeg = encoded('.jpg', known_bgr(20, 20))
    start_of_scan = jpeg.index(b'\xff\xda')
    frame = jpeg.index(b'\xff\xc0')
    frame_length = struct.unpack('>H', jpeg[frame + 2:frame + 4])[0]
    without_frame = jpeg[:frame] + jpeg[frame + 2 + frame_length:]
    assert start_of_scan > frame
    with raises_invalid('frame header'):
        compressed_to_bgr('jpeg', without_frame)


def test_compressed_depth_is_refused() -> None:
    with raises_invalid('compressedDepth'):
        compressed_to_bgr('16UC1; compressedDepth png', encoded('.png', known_bgr(4, 4)))


def test_compressed_non_buffer_raises() -> None:
    with raises_invalid('bytes-like'):
        compressed_to_bgr('png', None)


# Publishing.

def test_bgr_to_image_fields_round_trip() -> None:
    bgr = known_bgr(7, 9)
    fields = bgr_to_image_fields(bgr)
    assert (fields.encoding, fields.height, fields.width, fields.step) == ('bgr8', 7, 9, 27)
    assert isinstance(fields.data, array.array) and fields.data.typecode == 'B'
    assert len(fields.data) == 7 * 27
    np.testing.assert_array_equal(image_to_bgr(*fields[:4], False, fields.data), bgr)


def test_bgr_to_image_fields_of_a_strided_view() -> None:
    big = known_bgr(10, 12)
    view = big[2:9:2, 1:11:3]
    fields = bgr_to_image_fields(view)
    assert (fields.height, fields.width, fields.step) == (4, 4, 12)
    np.testing.assert_array_equal(image_to_bgr(*fields[:4], False, fields.data), view)


@pytest.mark.parametrize('image', [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4, 4, 3), np.uint16)])
def test_bgr_to_image_fields_refuses_non_bgr(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        bgr_to_image_fields(image)
