"""Soak: thousands of small frames through the node process; its memory, threads and open
files must not grow.

The node runs the tiny test model with a reliable, deep input queue, and each frame is sent
once the previous one is answered, so every frame goes through the whole pipeline (convert,
detect, publish detections and the annotated image). HUMAN_DETECTOR_SOAK_FRAMES sets the
number of frames (default 10,000).
"""
from __future__ import annotations

import array
import os
from pathlib import Path
from typing import Dict, NamedTuple, Set

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.ros.detection_client import DetectionClient, stamp_key, StampKey
from ros_harness import DiagnosticsMonitor, deep_reliable_input, detector_command

FRAMES = int(os.environ.get('HUMAN_DETECTOR_SOAK_FRAMES', '10000'))
WARM_UP_FRAMES = min(1000, FRAMES // 2)
STARTUP_S = 60.0
ANSWER_S = 60.0  # a hang guard only
RSS_GROWTH_LIMIT_KB = 10 * 1024
WIDTH, HEIGHT = 64, 48
# encoding: bytes per pixel
ENCODINGS = (('bgr8', 3), ('rgb8', 3), ('mono8', 1))


class Resources(NamedTuple):
    """What a process holds: resident memory (kB), threads, open file descriptors."""

    rss_kb: int
    threads: int
    fds: int


def resources(pid: int) -> Resources:
    status: Dict[str, str] = {}
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, value = line.partition(':')
        status[key] = value.strip()
    return Resources(int(status['VmRSS'].split()[0]), int(status['Threads']),
                     len(os.listdir(f'/proc/{pid}/fd')))


def frame(index: int, rng: np.random.Generator) -> Image:
    """Frame `index`: random pixels, the encodings in turn, a stamp of its own."""
    encoding, pixel_bytes = ENCODINGS[index % len(ENCODINGS)]
    data = array.array('B')
    data.frombytes(rng.bytes(HEIGHT * WIDTH * pixel_bytes))
    return Image(header=Header(stamp=Time(sec=1_000_000 + index), frame_id='soak_camera'),
                 height=HEIGHT, width=WIDTH, encoding=encoding, step=WIDTH * pixel_bytes,
                 data=data)


def test_thousands_of_frames_leave_memory_threads_and_files_flat(
        rclpy_context, start_process, tiny_model):
    node = start_process(detector_command(
        '-r', '__node:=soak_detector', '-r', 'image:=/soak/image',
        '-r', 'detections:=/soak/detections', '-r', 'annotated_image:=/soak/annotated_image',
        '-p', f'engine_path:={tiny_model}', *deep_reliable_input('/soak/image')), 'node')
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    pid = node.process.pid

    client = DetectionClient('soak_client', '/soak/unused')
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.RELIABLE)
    publisher = client.create_publisher(Image, '/soak/image', reliable)
    answered: Set[StampKey] = set()
    annotated: Set[StampKey] = set()
    client.create_subscription(Detection2DArray, '/soak/detections',
                               lambda msg: answered.add(stamp_key(msg.header)), reliable)
    client.create_subscription(Image, '/soak/annotated_image',
                               lambda msg: annotated.add(stamp_key(msg.header)), reliable)
    diagnostics = DiagnosticsMonitor(client, 'soak_detector: pipeline')
    rng = np.random.default_rng(7)
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, STARTUP_S)
        for attempt in range(int(STARTUP_S)):  # until both directions are discovered
            publisher.publish(frame(-1 - attempt, rng))
            if client.spin_until(lambda: answered and annotated, 1.0):
                break
        assert answered and annotated, node.output()
        first_counts = diagnostics.settled_counts()
        assert first_counts, 'no settled /diagnostics'
        answered.clear()
        annotated.clear()

        for index in range(FRAMES):
            if index == WARM_UP_FRAMES:
                warm = resources(pid)
            msg = frame(index, rng)
            publisher.publish(msg)
            key = stamp_key(msg.header)
            assert client.spin_until(lambda: key in answered and key in annotated, ANSWER_S), \
                f'frame {index} unanswered\n{node.output()[-3000:]}'
            answered.clear()
            annotated.clear()
        end = resources(pid)
        counts = diagnostics.settled_counts(first_counts['frames received'] + FRAMES, STARTUP_S)
    finally:
        diagnostics.destroy()
        client.destroy_node()

    figures = f'after {WARM_UP_FRAMES} frames {warm}, after {FRAMES} {end}; counts {counts}'
    assert counts['frames published'] - first_counts['frames published'] == FRAMES, figures
    assert counts['frames superseded by newer ones'] == 0, figures
    assert end.rss_kb - warm.rss_kb < RSS_GROWTH_LIMIT_KB, figures
    assert end.threads <= warm.threads, figures
    assert end.fds <= warm.fds, figures
    assert node.process.poll() is None, node.output()[-3000:]
    assert node.stop() == 0, node.output()[-3000:]
