"""/diagnostics end to end, a runtime engine fault, and the hint for cameras whose frames
never arrive: the node in its own process with the tiny test model, cameras in others."""
from __future__ import annotations

import sys
import time
from typing import Dict, Iterator

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.health import STAGES
from human_detector_ros.ros.paths import installed_executable
from ros_harness import DiagnosticsMonitor, deep_reliable_input, detector_command

STARTUP_S = 60.0
ANSWER_S = 10.0
NO_IMAGE_WARN_S = 1.0
ERROR_AFTER_FAILURES = 5  # PipelineHealth's default, which the node keeps

# A 1280x720 bgr8 camera publishing best effort at 10 Hz on the topic given as argv[1], from
# a plain loop as a driver thread does.
BEST_EFFORT_CAMERA = '''
import sys
import time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from human_detector_ros.ros.messages import bgr_to_image_msg

rclpy.init()
node = rclpy.create_node('hd_camera')
publisher = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
frame = np.zeros((720, 1280, 3), np.uint8)
try:
    while rclpy.ok():
        publisher.publish(bgr_to_image_msg(
            frame, Header(stamp=node.get_clock().now().to_msg(), frame_id='hd_camera')))
        time.sleep(0.1)
except KeyboardInterrupt:
    pass
'''


def values_of(status: DiagnosticStatus) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def published(status: DiagnosticStatus) -> int:
    return int(values_of(status)['frames published'])


@pytest.fixture
def listener(rclpy_context) -> Iterator[Node]:
    node = rclpy.create_node('diagnostics_listener')
    yield node
    node.destroy_node()


def test_ok_while_frames_come_warn_when_the_camera_stops_ok_when_it_resumes(
        listener, start_process, tiny_model, tmp_path):
    node = start_process(detector_command(
        '-r', '__node:=diag_detector', '-r', 'image:=/diag/image',
        '-p', f'engine_path:={tiny_model}', '-p', f'no_image_warn_s:={NO_IMAGE_WARN_S}'),
        'node')
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    picture = tmp_path / 'picture.png'
    cv2.imwrite(str(picture), np.random.default_rng(3).integers(0, 256, (48, 64, 3), np.uint8))
    camera = [installed_executable('sample_camera'), '--ros-args', '-p', f'images:=[{picture}]',
              '-p', 'rate_hz:=10.0', '-r', 'image:=/diag/image']
    monitor = DiagnosticsMonitor(listener, 'diag_detector: pipeline')

    first_camera = start_process(camera, 'camera')
    ok = monitor.wait_for(
        lambda s: s.level == DiagnosticStatus.OK and published(s) > 0, STARTUP_S)
    assert ok is not None, (monitor.values(), node.output())
    values = values_of(ok)
    assert (values['backend'], values['device'], values['engine']) == (
        'onnxruntime', 'cpu', str(tiny_model)), values
    assert ok.hardware_id == 'onnxruntime cpu'
    for stage in STAGES:
        assert float(values[f'{stage} median (ms)']) >= 0.0, values
    assert float(values['infer median (ms)']) > 0.0, values
    assert float(values['input rate (Hz)']) > 0.0, values

    first_camera.stop()
    warn = monitor.wait_for(lambda s: s.level == DiagnosticStatus.WARN, STARTUP_S)
    assert warn is not None, monitor.values()
    assert 'no image' in warn.message
    assert float(values_of(warn)['seconds since last image']) >= NO_IMAGE_WARN_S

    start_process(camera, 'camera_again')
    again = monitor.wait_for(
        lambda s: s.level == DiagnosticStatus.OK and published(s) > published(warn), STARTUP_S)
    assert again is not None, (monitor.values(), node.output())
    assert node.process.poll() is None, node.output()


def test_frames_that_make_inference_fail_raise_error_and_the_node_recovers(
        rclpy_context, start_process, failing_tiny_model):
    node = start_process(detector_command(
        '-r', '__node:=fault_detector', '-r', 'image:=/fault/image',
        '-p', f'engine_path:={failing_tiny_model}',
        '-p', f'no_image_warn_s:={NO_IMAGE_WARN_S}', *deep_reliable_input('/fault/image')),
        'node')
    assert node.wait_for_output(str(failing_tiny_model), STARTUP_S), node.output()
    client = DetectionClient('fault_client', '/fault/image')
    monitor = DiagnosticsMonitor(client, 'fault_detector: pipeline')
    # Never all white, so the model runs it.
    noise = np.random.default_rng(5).integers(0, 200, (48, 64, 3), np.uint8)
    white = np.full((64, 64, 3), 255, np.uint8)
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
        assert client.detect(noise, 'fault_camera', ANSWER_S) is not None, node.output()

        # Frames that come while the node is busy are superseded, not run: send white
        # frames until enough of them have failed in a row.
        white_stamps = []
        error = None
        end = time.monotonic() + STARTUP_S
        while error is None and time.monotonic() < end:
            white_stamps.append(stamp_key(client.publish_frame(white, 'fault_camera')))
            error = monitor.wait_for(lambda s: s.level == DiagnosticStatus.ERROR, 0.2)
        assert error is not None, (monitor.values(), node.output()[-3000:])
        assert 'inference failed' in error.message
        assert failing_tiny_model.name in values_of(error)['last error']
        assert not set(white_stamps) & set(client.detections)

        # The camera pauses for longer than no_image_warn_s: the node keeps running.
        client.spin_until(lambda: False, NO_IMAGE_WARN_S + 1.5)
        assert node.process.poll() is None, node.output()[-3000:]

        answer = client.detect(noise, 'fault_camera', ANSWER_S, resend_after_s=ANSWER_S)
        assert answer is not None, node.output()[-3000:]
        header, detections = answer
        assert detections.header == header
        ok = monitor.wait_for(lambda s: s.level == DiagnosticStatus.OK, STARTUP_S)
        assert ok is not None, monitor.values()
        failed = int(values_of(ok)['frames dropped (inference failed)'])
        assert ERROR_AFTER_FAILURES <= failed <= len(white_stamps), values_of(ok)
    finally:
        monitor.destroy()
        client.destroy_node()
    assert 'inference failed' in node.output()
    assert node.stop() == 0, node.output()[-3000:]
    assert 'Traceback' not in node.output(), node.output()[-3000:]


def test_a_publisher_whose_frames_never_arrive_makes_the_node_name_the_profile_fix(
        listener, start_process, tiny_model):
    node = start_process(detector_command(
        '-r', '__node:=starved_detector', '-r', 'image:=/starved/image',
        '-p', f'engine_path:={tiny_model}', '-p', f'no_image_warn_s:={NO_IMAGE_WARN_S}'),
        'node')
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    # What the node sees of a camera whose large frames DDS drops: a publisher, no frames.
    # (A camera without the profile loses most frames, not always all of them.)
    silent_camera = listener.create_publisher(Image, '/starved/image', qos_profile_sensor_data)
    try:
        assert node.wait_for_output('fastdds_large_images.xml', STARTUP_S), node.output()
    finally:
        listener.destroy_publisher(silent_camera)
    hint = next(line for line in node.output().splitlines()
                if 'fastdds_large_images.xml' in line)
    assert '/starved/image' in hint and 'no frame' in hint

    # The fix the hint names: a best-effort 720p camera with the profile gets frames through.
    start_process([sys.executable, '-c', BEST_EFFORT_CAMERA, '/starved/image'],
                  'camera_with_profile')
    monitor = DiagnosticsMonitor(listener, 'starved_detector: pipeline')
    arrived = monitor.wait_for(lambda s: published(s) > 0, STARTUP_S)
    assert arrived is not None, (monitor.values(), node.output())
    assert node.process.poll() is None, node.output()
