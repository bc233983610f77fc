"""Fuzzing the node's input over real DDS: thousands of malformed frames, valid ones between.

One node process per transport (raw sensor_msgs/Image, CompressedImage), with the tiny test
model and a reliable, deep input queue (QoS overrides) so that every frame sent is received
and accounted for in /diagnostics. Inputs come from a seeded generator: CI runs a fixed seed;
HUMAN_DETECTOR_FUZZ_MESSAGES and HUMAN_DETECTOR_FUZZ_SEED select longer or other runs.

Valid frames are paced: the next message goes out only once the valid frame's detections are
back, because the node keeps only the newest frame and a valid frame replaced by a newer one
would rightly get no answer. Other frames are sent PACE_S apart.
"""
from __future__ import annotations

import array
import collections
import dataclasses
import enum
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.ros.detection_client import DetectionClient, stamp_key, StampKey
from ros_harness import DiagnosticsMonitor, deep_reliable_input, detector_command, RosProcess

MESSAGES = int(os.environ.get('HUMAN_DETECTOR_FUZZ_MESSAGES', '10000'))
SEED = int(os.environ.get('HUMAN_DETECTOR_FUZZ_SEED', '20251126'))
VALID_SHARE = 0.07
# A pause after each message, so that most frames reach the converter instead of being
# replaced in the node's one-frame mailbox by the next one.
PACE_S = 0.0002
STARTUP_S = 60.0
ANSWER_S = 30.0
FIRST_STAMP_SEC = 1_000_000

# name: (samples per pixel, bytes per sample), as sensor_msgs/image_encodings and cv_bridge
# define them; an independent table, so that a name the node forgets shows up as a failure.
ENCODINGS: Dict[str, Tuple[int, int]] = {
    'bgr8': (3, 1), 'rgb8': (3, 1), 'bgra8': (4, 1), 'rgba8': (4, 1), 'mono8': (1, 1),
    'bgr16': (3, 2), 'rgb16': (3, 2), 'bgra16': (4, 2), 'rgba16': (4, 2), 'mono16': (1, 2),
    'yuv422': (2, 1), 'uyvy': (2, 1), 'yuv422_yuy2': (2, 1), 'yuyv': (2, 1),
    **{f'bayer_{order}{bits}': (1, bits // 8)
       for order in ('rggb', 'bggr', 'gbrg', 'grbg') for bits in (8, 16)},
}
PIXEL_PAIRS = frozenset({'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'})
UNKNOWN_ENCODINGS = ('', '8UC3', '8UC1', '16UC1', '32FC1', '64FC3', 'BGR8', 'bgr8 ', ' rgb8',
                     'nv21', 'nv12', 'yuv420', 'jpeg', 'bayer_rggb32', 'rgb8é', 'x' * 1000)
# First bytes of the formats cv2.imdecode recognises (BMP, GIF, JPEG, JPEG 2000, PNG, PxM,
# Sun raster, TIFF, Radiance HDR, OpenEXR, WebP, AVIF): garbage avoids them to stay garbage.
IMAGE_MAGIC_FIRST_BYTES = frozenset(b'\x00#BGIMPRYv\x89\xff')
UINT32_MAX = 2 ** 32 - 1
FRAME_ID_CHARACTERS = 'abcxyz_/019 .-é€'


class Outcome(enum.Enum):
    VALID = 'valid'  # must be answered, with its header
    INVALID = 'invalid'  # must be dropped and counted
    ANY = 'any'  # a lenient decoder may make an image of it (a truncated JPEG, say)


@dataclass
class Case:
    """A generated message; `size` (height, width) of the image a VALID one holds."""

    msg: Any
    kind: str
    outcome: Outcome
    size: Tuple[int, int] = (0, 0)


def random_bytes(rng: np.random.Generator, count: int) -> array.array:
    data = array.array('B')
    data.frombytes(rng.bytes(count))
    return data


def pick(rng: np.random.Generator, choices: Any) -> Any:
    return choices[int(rng.integers(len(choices)))]


def valid_width(rng: np.random.Generator, encoding: str) -> int:
    return 2 * int(rng.integers(1, 33)) if encoding in PIXEL_PAIRS else int(rng.integers(1, 65))


def raw_image(encoding: str, height: int, width: int, step: int, data: array.array,
              big_endian: int = 0) -> Image:
    return Image(encoding=encoding, height=height, width=width, step=step, data=data,
                 is_bigendian=big_endian)


def valid_raw(rng: np.random.Generator, encoding: str) -> Case:
    """A small frame with row padding, trailing bytes and any byte-order flag."""
    channels, sample_bytes = ENCODINGS[encoding]
    height, width = int(rng.integers(1, 49)), valid_width(rng, encoding)
    step = width * channels * sample_bytes + int(pick(rng, (0, 0, 1, 3, 8)))
    extra = int(pick(rng, (0, 0, 1, 100, 5000)))
    big_endian = int(pick(rng, (0, 1, 255)))
    msg = raw_image(encoding, height, width, step, random_bytes(rng, height * step + extra),
                    big_endian)
    kind = 'valid, oversized data' if extra else 'valid'
    return Case(msg, kind, Outcome.VALID, (height, width))


def invalid_raw(rng: np.random.Generator) -> Case:
    """A frame no converter may accept: each kind breaks one rule of sensor_msgs/Image."""
    encoding = pick(rng, sorted(ENCODINGS))
    channels, sample_bytes = ENCODINGS[encoding]
    pixel_bytes = channels * sample_bytes
    height, width = int(rng.integers(1, 49)), valid_width(rng, encoding)
    row = width * pixel_bytes
    kind = pick(rng, ('unknown encoding', 'random encoding', 'zero size', 'huge size',
                      'step too small', 'truncated data', 'empty data', 'odd width yuv',
                      'step overflow'))
    if kind in ('unknown encoding', 'random encoding'):
        name = pick(rng, UNKNOWN_ENCODINGS) if kind == 'unknown encoding' else ''.join(
            pick(rng, 'abgrmonoyuv_0123456789') for _ in range(int(rng.integers(1, 12))))
        if name in ENCODINGS:
            name += '?'
        msg = raw_image(name, height, width, width * 3, random_bytes(rng, height * width * 3))
    elif kind == 'zero size':
        height, width = pick(rng, ((0, width), (height, 0), (0, 0)))
        msg = raw_image(encoding, height, width, width * pixel_bytes,
                        random_bytes(rng, int(rng.integers(0, 64))))
    elif kind == 'huge size':
        height, width = pick(rng, ((100000, 100000), (UINT32_MAX, 1), (1, UINT32_MAX),
                                   (UINT32_MAX, UINT32_MAX), (16385, 16), (16, 16385)))
        msg = raw_image(encoding, height, width, min(width * pixel_bytes, UINT32_MAX),
                        random_bytes(rng, int(rng.integers(0, 1000))))
    elif kind == 'step too small':
        msg = raw_image(encoding, height, width, int(rng.integers(0, row)),
                        random_bytes(rng, height * row))
    elif kind in ('truncated data', 'empty data'):
        size = int(rng.integers(0, height * row)) if kind == 'truncated data' else 0
        msg = raw_image(encoding, height, width, row, random_bytes(rng, size))
    elif kind == 'odd width yuv':
        encoding, width = pick(rng, sorted(PIXEL_PAIRS)), 2 * int(rng.integers(0, 32)) + 1
        msg = raw_image(encoding, height, width, width * 2, random_bytes(rng, height * width * 2))
    else:
        msg = raw_image(encoding, height, width, UINT32_MAX, random_bytes(rng, height * row))
    return Case(msg, kind, Outcome.INVALID)


def random_picture(rng: np.random.Generator) -> np.ndarray:
    """A small BGR, grey, BGRA or 16-bit picture: noise or one colour."""
    height, width = int(rng.integers(1, 49)), int(rng.integers(1, 65))
    channels = int(pick(rng, (3, 1, 4)))
    dtype = pick(rng, (np.uint8, np.uint8, np.uint16))
    shape = (height, width) if channels == 1 else (height, width, channels)
    top = np.iinfo(dtype).max
    if rng.random() < 0.5:
        return rng.integers(0, top, size=shape, endpoint=True).astype(dtype)
    return np.full(shape, rng.integers(0, top, endpoint=True), dtype)


def encoded(picture: np.ndarray, rng: np.random.Generator) -> Tuple[str, bytes]:
    """(format as image_transport writes it, bytes) of a JPEG or PNG of `picture`."""
    if picture.dtype == np.uint8 and rng.random() < 0.5:
        quality = int(rng.integers(5, 101))
        data = cv2.imencode('.jpg', picture, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        return pick(rng, ('jpeg', 'bgr8; jpeg compressed bgr8', 'rgb8; jpeg compressed bgr8',
                          'JPEG', '')), data.tobytes()
    data = cv2.imencode('.png', picture)[1]
    return pick(rng, ('png', 'bgr8; png compressed bgr8', 'mono16; png compressed mono16',
                      '')), data.tobytes()


def png_header_only(height: int, width: int) -> bytes:
    """A PNG signature and an IHDR chunk declaring height x width RGB, then IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body)))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')


def compressed(format: str, data: bytes) -> CompressedImage:
    payload = array.array('B')
    payload.frombytes(data)
    return CompressedImage(format=format, data=payload)


def valid_compressed(rng: np.random.Generator) -> Case:
    picture = random_picture(rng)
    format, data = encoded(picture, rng)
    return Case(compressed(format, data), 'valid', Outcome.VALID, picture.shape[:2])


def invalid_compressed(rng: np.random.Generator) -> Case:
    """Empty, garbage, damaged or refused payloads; damaged ones may still decode."""
    format, data = encoded(random_picture(rng), rng)
    kind = pick(rng, ('empty', 'garbage', 'magic then garbage', 'truncated', 'bit flips',
                      'compressedDepth', 'huge png header'))
    outcome = Outcome.INVALID
    if kind == 'empty':
        data = b''
    elif kind == 'garbage':
        data = rng.bytes(int(rng.integers(1, 3000)))
        first = pick(rng, sorted(set(range(256)) - IMAGE_MAGIC_FIRST_BYTES))
        data = bytes([first]) + data[1:]
    elif kind == 'magic then garbage':
        data, outcome = data[:int(rng.integers(2, 12))] + rng.bytes(500), Outcome.ANY
    elif kind == 'truncated':
        data, outcome = data[:int(rng.integers(0, len(data)))], Outcome.ANY
    elif kind == 'bit flips':
        damaged = bytearray(data)
        for position in rng.integers(0, len(damaged), size=int(rng.integers(1, 20))):
            damaged[position] ^= 1 << int(rng.integers(8))
        data, outcome = bytes(damaged), Outcome.ANY
    elif kind == 'compressedDepth':
        format = pick(rng, ('16UC1; compressedDepth', '32FC1; compressedDepth png'))
    else:
        data = png_header_only(*pick(rng, ((100000, 100000), (2 ** 31 - 1, 1),
                                           (1, 2 ** 31 - 1))))
    return Case(compressed(format, data), kind, outcome)


def raw_cases(rng: np.random.Generator) -> Callable[[], Case]:
    """Generator of raw cases; valid ones cycle through every encoding."""
    names = sorted(ENCODINGS)
    valid_count = [0]

    def next_case() -> Case:
        if rng.random() < VALID_SHARE:
            valid_count[0] += 1
            return valid_raw(rng, names[valid_count[0] % len(names)])
        return invalid_raw(rng)
    return next_case


def compressed_cases(rng: np.random.Generator) -> Callable[[], Case]:
    return lambda: (valid_compressed(rng) if rng.random() < VALID_SHARE
                    else invalid_compressed(rng))


def random_frame_id(rng: np.random.Generator) -> str:
    return ''.join(pick(rng, FRAME_ID_CHARACTERS) for _ in range(int(rng.integers(0, 30))))


def assert_boxes_inside(msg: Detection2DArray, size: Tuple[int, int], what: str) -> None:
    height, width = size
    for detection in msg.detections:
        box = detection.bbox
        x, y = box.center.position.x, box.center.position.y
        assert -1e-3 <= x - box.size_x / 2 and x + box.size_x / 2 <= width + 1e-3, what
        assert -1e-3 <= y - box.size_y / 2 and y + box.size_y / 2 <= height + 1e-3, what


@dataclass
class Sent:
    """A message as sent: its header, and its case without the payload."""

    header: Header
    case: Case


@pytest.mark.parametrize('transport', ['raw', 'compressed'])
def test_fuzzed_frames_are_all_accounted_for_and_valid_ones_answered(
        rclpy_context, start_process, tiny_model, transport):
    node_name = f'fuzz_{transport}_detector'
    image_topic = f'/fuzz_{transport}/image'
    topic = image_topic + ('/compressed' if transport == 'compressed' else '')
    node = start_process(detector_command(
        '-r', f'__node:={node_name}', '-r', f'image:={image_topic}',
        '-r', f'detections:=/fuzz_{transport}/detections',
        '-p', f'engine_path:={tiny_model}', '-p', f'input_transport:={transport}',
        '-p', 'publish_annotated:=false', *deep_reliable_input(topic)), node_name)
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()

    client = DetectionClient(f'fuzz_{transport}_client', f'/fuzz_{transport}/unused')
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=MESSAGES + 1000,
                      reliability=ReliabilityPolicy.RELIABLE)
    publisher = client.create_publisher(
        CompressedImage if transport == 'compressed' else Image, topic, deep)
    answers: Dict[StampKey, Detection2DArray] = {}
    client.create_subscription(
        Detection2DArray, f'/fuzz_{transport}/detections',
        lambda msg: answers.__setitem__(stamp_key(msg.header), msg), deep)
    diagnostics = DiagnosticsMonitor(client, f'{node_name}: pipeline')
    rng = np.random.default_rng(SEED)
    next_case = raw_cases(rng) if transport == 'raw' else compressed_cases(rng)
    sent: Dict[StampKey, Sent] = {}
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, STARTUP_S), \
            node.output()
        baseline = warm_up(client, publisher, answers, diagnostics, next_case, node)
        for index in range(MESSAGES):
            case = next_case()
            case.msg.header = Header(
                stamp=Time(sec=FIRST_STAMP_SEC + index, nanosec=int(rng.integers(10 ** 9))),
                frame_id=random_frame_id(rng))
            publisher.publish(case.msg)
            key = stamp_key(case.msg.header)
            sent[key] = Sent(case.msg.header, dataclasses.replace(case, msg=None))
            if case.outcome is Outcome.VALID:
                assert client.spin_until(lambda: key in answers, ANSWER_S), (
                    f'no detections for valid frame {index} ({case.kind}, seed {SEED}): '
                    f'{describe(case.msg)}\n{node.output()[-3000:]}')
            else:
                time.sleep(PACE_S)
        counts = diagnostics.settled_counts(baseline['frames received'] + MESSAGES, 60.0)
        client.spin_until(lambda: False, 0.5)  # answers may trail the counts
    finally:
        diagnostics.destroy()
        client.destroy_node()

    check_outcomes(sent, answers, subtract(counts, baseline), transport)
    assert node.process.poll() is None, node.output()[-3000:]
    assert node.stop() == 0, node.output()[-3000:]
    assert 'Traceback' not in node.output(), node.output()[-3000:]


def warm_up(client: DetectionClient, publisher: Any, answers: Dict[StampKey, Any],
            diagnostics: DiagnosticsMonitor, next_case: Callable[[], Case],
            node: RosProcess) -> Dict[str, int]:
    """Send valid frames until one is answered (both directions discovered); return the
    node's settled counts after that, to subtract from the final ones."""
    case = next_case()
    while case.outcome is not Outcome.VALID:
        case = next_case()
    for attempt in range(int(STARTUP_S)):
        case.msg.header = Header(stamp=Time(sec=attempt + 1), frame_id='warm_up')
        publisher.publish(case.msg)
        if client.spin_until(lambda: stamp_key(case.msg.header) in answers, 1.0):
            break
    else:
        raise AssertionError(f'the node never answered\n{node.output()}')
    answers.clear()
    baseline = diagnostics.settled_counts()
    assert baseline.get('frames received', 0) >= 1, f'no settled /diagnostics: {baseline}'
    return baseline


def subtract(counts: Dict[str, int], baseline: Dict[str, int]) -> Dict[str, int]:
    return {key: value - baseline[key] for key, value in counts.items()}


def describe(msg: Any) -> str:
    if isinstance(msg, Image):
        return (f'Image {msg.encoding!r} {msg.width}x{msg.height} step {msg.step} '
                f'bigendian {msg.is_bigendian} data {len(msg.data)} bytes')
    return f'CompressedImage {msg.format!r} data {len(msg.data)} bytes'


def check_outcomes(sent: Dict[StampKey, Sent], answers: Dict[StampKey, Detection2DArray],
                   counts: Dict[str, int], transport: str) -> None:
    """Every message received and accounted for; answers exactly where they are due."""
    by_outcome = collections.Counter(item.case.outcome for item in sent.values())
    kinds = collections.Counter(item.case.kind for item in sent.values())
    figures = f'seed {SEED}, sent {dict(by_outcome)}, kinds {dict(kinds)}, node {counts}'
    assert counts['frames received'] == len(sent) == MESSAGES, figures
    assert counts['frames received'] == counts['frames published'] + counts[
        'frames dropped (invalid image)'] + counts['frames dropped (inference failed)'] + \
        counts['frames superseded by newer ones'], figures
    assert counts['frames dropped (inference failed)'] == 0, figures
    assert set(answers) <= set(sent), 'answers to frames never sent'
    assert counts['frames published'] == len(answers), figures
    for key, item in sent.items():
        outcome = item.case.outcome
        if outcome is Outcome.VALID:
            assert key in answers, f'valid frame unanswered: {item.case.kind}; {figures}'
        if outcome is Outcome.INVALID:
            assert key not in answers, f'invalid frame answered: {item.case.kind}; {figures}'
        if key in answers:
            msg = answers[key]
            assert msg.header == item.header, (msg.header, item.header)
            assert all(detection.header == item.header for detection in msg.detections)
            if outcome is Outcome.VALID:
                assert_boxes_inside(msg, item.case.size, item.case.kind)
    dropped = counts['frames dropped (invalid image)'] + counts['frames superseded by newer ones']
    assert dropped == len(sent) - len(answers), figures
    assert by_outcome[Outcome.VALID] >= 0.04 * MESSAGES, figures
    # Superseded frames never reach the converter; how many are superseded depends on the
    # machine's load, so only that some reach it is certain.
    assert counts['frames dropped (invalid image)'] > 0, figures
    expected_kinds = 10 if transport == 'raw' else 8
    assert len(kinds) >= expected_kinds, figures
