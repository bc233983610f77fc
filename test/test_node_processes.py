"""The node as a process: with a camera process, compressed input, shutdown, startup faults."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import List

import cv2
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.detection_client import DetectionClient
from human_detector_ros.ros.messages import bgr_to_image_msg
from human_detector_ros.ros.paths import installed_executable
from ros_harness import (
    deep_reliable_input, detector_command, DiagnosticsMonitor, ros2_param_set, RosProcess)

STARTUP_S = 60.0


BURST = 30


def assert_stops_cleanly(node: RosProcess, stop_signal: signal.Signals) -> None:
    """Ctrl-C (SIGINT) or SIGTERM to a node that has been working: exit code 0, no traceback.
    (The tests whose node ran frames end with this instead of starting a node to stop.)"""
    node.process.send_signal(stop_signal)
    assert node.process.wait(timeout=30) == 0, node.output()
    assert 'Traceback' not in node.output()


def test_frames_that_come_while_the_node_is_busy_are_superseded_never_queued_then_sigterm(
        rclpy_context, start_process):
    """A burst of frames, all delivered (reliable, deep on both sides), far faster than the
    model runs: the node never works through a backlog. Every frame gets an outcome, the
    outputs keep the input order, and the newest frame is always answered. (How old frames
    are at publish under a fast camera is measured by bench/bench_node.py.) Then SIGTERM, as
    a service manager sends it, stops the node cleanly."""
    node = start_process(detector_command(
        '-r', '__node:=burst_detector', '-r', 'image:=/burst/image',
        '-r', 'detections:=/burst/detections', *deep_reliable_input('/burst/image')), 'node')
    client = DetectionClient('burst_client', '/unused/image')
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=BURST * 2,
                      reliability=ReliabilityPolicy.RELIABLE)
    publisher = client.create_publisher(Image, '/burst/image', deep)
    answers: List[Detection2DArray] = []
    client.create_subscription(Detection2DArray, '/burst/detections', answers.append, deep)
    diagnostics = DiagnosticsMonitor(client, 'burst_detector: pipeline')
    frame = read_bgr(str(sample_image_path('camera.png')))

    def send(index: int) -> Header:
        header = Header(stamp=Time(sec=1000 + index), frame_id='burst_camera')
        publisher.publish(bgr_to_image_msg(frame, header))
        return header

    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, STARTUP_S), \
            node.output()
        send(0)
        assert client.spin_until(lambda: answers, STARTUP_S), node.output()
        baseline = diagnostics.settled_counts(1, STARTUP_S)
        answers.clear()
        headers = [send(index) for index in range(1, BURST + 1)]
        assert client.spin_until(lambda: any(msg.header == headers[-1] for msg in answers),
                                 STARTUP_S), node.output()
        counts = diagnostics.settled_counts(1 + BURST, STARTUP_S)
    finally:
        diagnostics.destroy()
        client.destroy_node()
    assert counts['frames received'] - baseline['frames received'] == BURST, counts
    published = counts['frames published'] - baseline['frames published']
    superseded = counts['frames superseded by newer ones'] - \
        baseline['frames superseded by newer ones']
    assert published + superseded == BURST, counts
    assert published == len(answers) and superseded > 0, (counts, len(answers))
    stamps = [msg.header.stamp.sec for msg in answers]
    assert stamps == sorted(set(stamps)), 'outputs out of order or repeated'
    assert answers[-1].header == headers[-1]
    assert_stops_cleanly(node, signal.SIGTERM)


def test_compressed_input_on_the_image_transport_subtopic_then_ctrl_c_stops_the_node(
        rclpy_context, start_process):
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
        end = time.monotonic() + STARTUP_S
        while not received and time.monotonic() < end:  # resent: a frame may be lost
            msg.header = Header(stamp=client.get_clock().now().to_msg(), frame_id='jpeg_cam')
            publisher.publish(msg)
            client.spin_until(lambda: received, 2.0)
    finally:
        client.destroy_node()
    assert received, node.output()
    assert received[0].header.frame_id == 'jpeg_cam'
    classes = [d.results[0].hypothesis.class_id for d in received[0].detections]
    assert classes == ['0']
    assert_stops_cleanly(node, signal.SIGINT)


def heavy_imports_under_way(pid: int) -> bool:
    """True once the process has loaded numpy's or rcl's shared library: it is importing
    the node's modules (an entry point installs its stop handlers before that)."""
    maps = Path(f'/proc/{pid}/maps').read_text()
    return '_multiarray_umath' in maps or 'librcl.so' in maps


@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('program, delay_s', [
    ('human_detector', 0.0), ('human_detector', 0.1), ('human_detector', 0.3),
    ('human_detector', 0.8), ('sample_camera', 0.0), ('sample_camera', 0.2)])
def test_a_signal_at_any_moment_of_startup_exits_0_without_traceback(
        start_process, stop_signal, program, delay_s):
    node = start_process([installed_executable(program), '--ros-args',
                          '-r', f'__node:=early_{program}', '-r', 'image:=/early/image'],
                         program)
    end = time.monotonic() + STARTUP_S
    while not heavy_imports_under_way(node.process.pid):
        assert node.process.poll() is None and time.monotonic() < end, node.output()
        time.sleep(0.002)
    time.sleep(delay_s)
    node.process.send_signal(stop_signal)
    assert node.process.wait(timeout=STARTUP_S) == 0, node.output()
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
    ('no_image_warn_s: fast', 'write a number'),
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
