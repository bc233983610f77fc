"""The node as a process: with a camera process, compressed input, shutdown, startup faults."""
from __future__ import annotations

import signal
import statistics
import time
from typing import List, Tuple

import cv2
import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.ros.detection_client import DetectionClient
from human_detector_ros.detector import HumanDetector
from human_detector_ros.ros.paths import installed_executable
from human_detector_ros.image_conversion import read_bgr
from ros_harness import detector_command, ros2_param_set

STARTUP_S = 60.0


def median_inference_s(frame: np.ndarray) -> float:
    detector = HumanDetector()
    timings = []
    for _ in range(5):
        detector(frame)
        timings.append(detector.last_timings.total_ms / 1000.0)
    return statistics.median(timings)


def test_camera_twice_as_fast_as_inference_never_builds_a_backlog(rclpy_context,
                                                                  start_process):
    frame = read_bgr(str(sample_image_path('camera.png')))
    inference_s = median_inference_s(frame)
    camera_period_s = inference_s / 2
    node = start_process(detector_command('-r', 'image:=/aged/image', '-r',
                                          'detections:=/aged/detections'), 'node')
    start_process([installed_executable('sample_camera'), '--ros-args',
                   '-p', f'images:=[{sample_image_path("camera.png")}]',
                   '-p', f'rate_hz:={1.0 / camera_period_s:.3f}',
                   '-p', 'frame_id:=aged_camera', '-r', 'image:=/aged/image'], 'camera')
    client = DetectionClient('age_listener', '/unused/image')
    arrivals: List[Tuple[float, Detection2DArray]] = []
    client.create_subscription(
        Detection2DArray, '/aged/detections',
        lambda msg: arrivals.append((time.time(), msg)), 10)
    try:
        assert client.spin_until(lambda: len(arrivals) >= 25, STARTUP_S), node.output()
    finally:
        client.destroy_node()
    steady = arrivals[5:]
    ages = [received - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
            for received, msg in steady]
    periods = np.diff([received for received, _ in steady])
    period = float(np.median(periods))
    stamps = [(msg.header.stamp.sec, msg.header.stamp.nanosec) for _, msg in steady]
    assert stamps == sorted(set(stamps)), 'outputs out of order or repeated'
    assert all(msg.header.frame_id == 'aged_camera' for _, msg in steady)
    # A frame waits at most one camera period before the node takes it, then takes one
    # inference period; anything older would mean a queue of stale frames.
    limit = period + camera_period_s + 0.05
    assert float(np.percentile(ages, 90)) <= limit, (ages, period, camera_period_s)


def test_compressed_input_on_the_image_transport_subtopic(rclpy_context, start_process):
    node = start_process(detector_command('-p', 'input_transport:=compressed',
                                          '-r', 'image:=/jpeg_cam/image',
                                          '-r', 'detections:=/jpeg_cam/detections'), 'node')
    client = DetectionClient('compressed_client', '/unused/image')
    received: List[Detection2DArray] = []
    client.create_subscription(Detection2DArray, '/jpeg_cam/detections', received.append, 10)
    publisher = client.create_publisher(CompressedImage, '/jpeg_cam/image/compressed', 1)
    frame = read_bgr(str(sample_image_path('camera.png')))
    msg = CompressedImage(format='jpeg', data=cv2.imencode('.jpg', frame)[1].tobytes())
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, STARTUP_S), \
            node.output()
        for _ in range(10):
            msg.header = Header(stamp=client.get_clock().now().to_msg(), frame_id='jpeg_cam')
            publisher.publish(msg)
            if client.spin_until(lambda: received, 3.0):
                break
    finally:
        client.destroy_node()
    assert received, node.output()
    assert received[0].header.frame_id == 'jpeg_cam'
    classes = [d.results[0].hypothesis.class_id for d in received[0].detections]
    assert classes == ['0']


@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_the_node_cleanly(rclpy_context, start_process, stop_signal):
    node = start_process(detector_command('-r', '__node:=stopped_detector',
                                          '-r', 'image:=/stopped/image'), 'node')
    client = DetectionClient('stop_probe', '/stopped/image')
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
    finally:
        client.destroy_node()
    node.process.send_signal(stop_signal)
    assert node.process.wait(timeout=30) == 0, node.output()
    assert 'Traceback' not in node.output()


@pytest.mark.parametrize('arguments, expected', [
    (['-p', 'engine_path:=/nonexistent/model.onnx'], '/nonexistent/model.onnx'),
    (['-p', 'backend:=magic'], 'backend'),
    (['-p', 'device:=gpu7'], 'device'),
    (['-p', 'tensorrt_precision:=int8'], 'tensorrt_precision'),
    (['-p', 'backend:=tensorrt'], 'tensorrt Python package is not installed'),
    (['-p', 'device:=cuda'], 'cpu'),
    (['-p', 'input_transport:=ffmpeg'], 'input_transport'),
    (['-p', 'conf_threshold:=2.0'], 'conf_threshold'),
    (['-p', 'conf_threshold:=1'], 'conf_threshold'),
    (['-p', 'max_det:=0'], 'max_det'),
    (['-p', 'classes:=[-3]'], 'classes'),
    (['-p', 'use_sim_time:=3'], 'use_sim_time'),
    (['-p', 'qos_overrides./image.subscription.reliability:=bogus'], 'bogus'),
])
def test_bad_setup_ends_with_one_clear_message_and_exit_code_1(
        start_process, arguments, expected):
    node = start_process(detector_command(*arguments), 'node')
    assert node.process.wait(timeout=STARTUP_S) == 1
    output = node.output()
    assert expected in output
    assert 'Traceback' not in output


@pytest.mark.parametrize('content, expected', [
    ('conf_threshold: 7.0', 'conf_threshold'),
    ('max_det: "many"', 'max_det'),
    ('input_transport: [raw]', 'input_transport'),
    ('[unclosed', 'params-file'),
])
def test_bad_params_file_ends_with_one_clear_message(start_process, tmp_path, content,
                                                     expected):
    params = tmp_path / 'params.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    {content}\n')
    node = start_process([installed_executable('human_detector'), '--ros-args',
                          '--params-file', str(params)], 'node')
    assert node.process.wait(timeout=STARTUP_S) == 1
    assert expected in node.output()
    assert 'Traceback' not in node.output()


def test_corrupt_model_file_is_refused_at_start(start_process, tmp_path):
    model = tmp_path / 'corrupt.onnx'
    model.write_bytes(b'\x08\x07' + bytes(range(256)) * 10)
    node = start_process(detector_command('-p', f'engine_path:={model}'), 'node')
    assert node.process.wait(timeout=STARTUP_S) == 1
    assert str(model) in node.output()
    assert 'Traceback' not in node.output()


def test_incompatible_camera_qos_is_logged_with_the_fix(rclpy_context, start_process):
    node = start_process(detector_command(
        '-r', 'image:=/strict/image',
        '-p', 'qos_overrides./strict/image.subscription.reliability:=reliable'), 'node')
    client = DetectionClient('best_effort_camera', '/unused/image')
    camera = client.create_publisher(
        Image, '/strict/image', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        assert node.wait_for_output('incompatible', STARTUP_S), node.output()
    finally:
        client.destroy_publisher(camera)
        client.destroy_node()
    assert 'qos_overrides./strict/image.subscription.reliability' in node.output()


@pytest.fixture
def without_tracking_library(tmp_path) -> dict:
    """Environment in which `import cjm_byte_track` fails, as on a robot that lacks it."""
    blocked = tmp_path / 'blocked' / 'cjm_byte_track'
    blocked.mkdir(parents=True)
    (blocked / '__init__.py').write_text("raise ImportError('not installed (test)')\n")
    return {'PYTHONPATH': str(blocked.parent)}


def test_tracking_without_its_library_ends_with_the_fix(start_process,
                                                        without_tracking_library):
    node = start_process(detector_command(), 'node', env=without_tracking_library)
    assert node.process.wait(timeout=STARTUP_S) == 1
    output = node.output()
    assert 'pip install cjm-byte-track' in output and 'tracking:=false' in output
    assert 'Traceback' not in output


def test_without_tracking_library_the_node_runs_with_tracking_off(
        rclpy_context, start_process, without_tracking_library):
    node = start_process(detector_command('-p', 'tracking:=false'), 'node',
                         env=without_tracking_library)
    client = DetectionClient('tracking_off_client')
    try:
        assert client.wait_for_detector(STARTUP_S)
        frame = read_bgr(str(sample_image_path('camera.png')))
        answer = client.detect(frame, timeout_s=STARTUP_S)
        assert answer is not None
        detections = answer[1].detections
        assert len(detections) == 1 and detections[0].id == ''
        result = ros2_param_set(client, '/human_detector', 'tracking', 'true')
        assert not result.successful and 'cjm-byte-track' in result.reason
    finally:
        client.destroy_node()
    assert node.stop() == 0
