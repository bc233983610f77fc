"""One human_detector node serving four cameras (`cameras`), over real DDS.

One node process under /cams with cameras front, rear, left and right (and depth on, so that
each camera has its depth topics) is shared by every test here: the managed node started with
`autostart_node`, which behaves as the plain one until the last test deactivates and
activates it. Each camera is played by its own DetectionClient inside `/cams/<camera>`. The
image inputs are made reliable and deep (QoS overrides), so every frame sent arrives and the
counts in /diagnostics are exact.
"""
from __future__ import annotations

import time
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.detector import HumanDetector
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.ros.paths import installed_config, installed_executable
from ros_harness import (
    DiagnosticsMonitor, RosProcess, deep_reliable_input, ros2_lifecycle_set, ros2_param_set)
from test_node_dds import assert_same_detections

CAMERAS = ('front', 'rear', 'left', 'right')
NAMESPACE = '/cams'
NODE = f'{NAMESPACE}/human_detector'
STARTUP_S = 60.0
HANG_GUARD_S = 180.0
RESEND_S = 30.0
"""A frame still unanswered after this long is sent again (stamped anew): a reliable sample
can be dropped by a reader that has not matched its writer yet."""

Answer = Tuple[Header, Detection2DArray]


@pytest.fixture(scope='module')
def detector_node(rclpy_context, tmp_path_factory) -> Iterator[RosProcess]:
    arguments = ['-r', f'__ns:={NAMESPACE}', '-p', f'cameras:=[{", ".join(CAMERAS)}]',
                 '-p', 'depth:=true']
    for camera in CAMERAS:
        arguments += deep_reliable_input(f'{NAMESPACE}/{camera}/image')
    log = tmp_path_factory.mktemp('cameras') / 'human_detector.log'
    process = RosProcess(
        [installed_executable('human_detector_lifecycle'), '--ros-args', '--params-file',
         installed_config('human_detector.yaml'), '-p', 'autostart_node:=true', *arguments], log)
    yield process
    assert process.stop() == 0, process.output()
    assert 'Traceback' not in process.output()


@pytest.fixture(scope='module')
def cameras(detector_node) -> Iterator[Dict[str, DetectionClient]]:
    clients = {camera: DetectionClient(f'{camera}_camera', 'image',
                                       namespace=f'{NAMESPACE}/{camera}')
               for camera in CAMERAS}
    for client in clients.values():
        assert client.wait_for_detector(STARTUP_S), detector_node.output()
    yield clients
    for client in clients.values():
        client.destroy_node()


@pytest.fixture(scope='module')
def listener(detector_node) -> Iterator[Node]:
    node = rclpy.create_node('cameras_listener')
    yield node
    node.destroy_node()


@pytest.fixture(scope='module')
def diagnostics(listener) -> Iterator[Dict[str, DiagnosticsMonitor]]:
    monitors = {camera: DiagnosticsMonitor(listener, f'human_detector: {camera} pipeline')
                for camera in CAMERAS}
    monitors['engine'] = DiagnosticsMonitor(listener, 'human_detector: engine')
    yield monitors
    for monitor in monitors.values():
        monitor.destroy()


@pytest.fixture(scope='module')
def reference() -> HumanDetector:
    """The core with the node's default NMS: agnostic, unlike the core's own default."""
    return HumanDetector(agnostic_nms=True)


def sample(name: str) -> np.ndarray:
    return read_bgr(str(sample_image_path(name)))


@pytest.fixture(scope='module')
def two_people() -> np.ndarray:
    """A wide frame (1112x512) where the default model finds class 1 and class 0 above 0.5
    (one box with the node's default agnostic NMS)."""
    return cv2.copyMakeBorder(sample('astronaut.png'), 0, 0, 300, 300, cv2.BORDER_CONSTANT,
                              value=(114, 114, 114))


def detect_all(clients: Dict[str, DetectionClient], frames: Dict[str, np.ndarray],
               headers: Optional[Dict[str, Header]] = None) -> Dict[str, Answer]:
    """Publish each camera's frame at once (stamped now unless `headers` gives one) and wait
    for every camera's answer; return (header sent, detections) by camera."""
    sent: Dict[str, List[Tuple[float, Header]]] = {camera: [] for camera in frames}
    answers: Dict[str, Answer] = {}
    end = time.monotonic() + HANG_GUARD_S
    while len(answers) < len(frames) and time.monotonic() < end:
        for camera, frame in frames.items():
            if camera not in answers and (
                    not sent[camera] or time.monotonic() - sent[camera][-1][0] > RESEND_S):
                header = clients[camera].publish_frame(
                    frame, f'{camera}_optical_frame', (headers or {}).get(camera))
                sent[camera].append((time.monotonic(), header))
        for camera in frames:
            client = clients[camera]
            rclpy.spin_once(client, timeout_sec=0.01)
            for _, header in sent[camera]:
                if camera not in answers and stamp_key(header) in client.detections:
                    answers[camera] = header, client.detections[stamp_key(header)]
    assert set(answers) == set(frames), f'no detections from {set(frames) - set(answers)}'
    return answers


def test_each_camera_gets_the_single_camera_detections_of_its_frame_with_its_header(
        cameras, reference, two_people):
    frames = {'front': sample('camera.png'), 'rear': two_people, 'left': sample('coffee.png'),
              'right': sample('astronaut.png')}
    answers = detect_all(cameras, frames)
    for camera, (header, msg) in answers.items():
        assert header.frame_id == f'{camera}_optical_frame'
        assert msg.header == header
        assert all(detection.header == header for detection in msg.detections)
        assert_same_detections(msg, reference(frames[camera]))
    assert answers['rear'][1].detections and not answers['left'][1].detections


def malformed_frame(header: Header) -> Image:
    """A bgr8 frame whose step is shorter than a row: every converter must refuse it."""
    return Image(header=header, height=4, width=4, encoding='bgr8', step=4, data=bytes(16))


def test_a_silent_camera_and_one_of_malformed_frames_change_nothing_for_the_others(
        cameras, diagnostics, reference, two_people):
    right = cameras['right']
    before = {camera: diagnostics[camera].settled_counts() for camera in CAMERAS}
    frames = {'front': sample('camera.png'), 'rear': two_people}
    malformed = 0
    for _ in range(3):
        for _ in range(3):
            right.image_pub.publish(malformed_frame(
                Header(stamp=right.get_clock().now().to_msg(), frame_id='right_optical_frame')))
            malformed += 1
        answers = detect_all(cameras, frames)
        for camera, (header, msg) in answers.items():
            assert msg.header == header
            assert_same_detections(msg, reference(frames[camera]))

    after = diagnostics['right'].settled_counts(before['right']['frames received'] + malformed,
                                                HANG_GUARD_S)
    assert after['frames received'] == before['right']['frames received'] + malformed
    assert after['frames published'] == before['right']['frames published']
    assert after['frames dropped (invalid image)'] > before['right'][
        'frames dropped (invalid image)']
    assert 'step' in diagnostics['right'].values()['last error']
    # Only invalid images, 5 processed in a row (a burst's older frames are superseded): WARN.
    warned = None
    end = time.monotonic() + HANG_GUARD_S
    while warned is None and time.monotonic() < end:
        right.image_pub.publish(malformed_frame(
            Header(stamp=right.get_clock().now().to_msg(), frame_id='right_optical_frame')))
        warned = diagnostics['right'].wait_for(
            lambda status: 'images were invalid' in status.message, 1.5)
    assert warned is not None and warned.level == bytes([1])
    for camera in ('front', 'rear'):
        counts = diagnostics[camera].settled_counts()
        assert counts['frames published'] >= before[camera]['frames published'] + 3
        assert counts['frames dropped (invalid image)'] == 0
    silent = diagnostics['left'].wait_for(
        lambda status: status.message.startswith('no image for'), HANG_GUARD_S)
    assert silent is not None and silent.level == bytes([1])
    assert diagnostics['left'].counts()['frames received'] == before['left']['frames received']


def test_track_ids_are_per_camera(cameras):
    # The rear camera's clock is 100 s behind: one shared tracker would restart at every
    # frame (stamps jumping back and forth) and issue new ids each time.
    now = cameras['front'].get_clock().now().nanoseconds
    offsets_ns = {'front': 0, 'rear': -100_000_000_000}
    frame = sample('camera.png')
    ids: Dict[str, List[List[str]]] = {'front': [], 'rear': []}
    for index in range(5):
        headers = {}
        for camera, offset_ns in offsets_ns.items():
            stamp_ns = now + offset_ns + index * 200_000_000
            headers[camera] = Header(frame_id=f'{camera}_optical_frame')
            headers[camera].stamp.sec, headers[camera].stamp.nanosec = divmod(
                stamp_ns, 1_000_000_000)
        for camera, (_, msg) in detect_all(cameras, {'front': frame, 'rear': frame},
                                           headers).items():
            ids[camera].append([detection.id for detection in msg.detections])
    for camera, per_frame in ids.items():
        assert len(per_frame[1]) == 1 and per_frame[1][0], (camera, per_frame)
        assert all(frame_ids == per_frame[1] for frame_ids in per_frame[2:]), (camera, per_frame)


def test_diagnostics_label_info_and_depth_topics_per_camera(cameras, diagnostics, listener):
    for camera in CAMERAS:
        status = diagnostics[camera].wait_for(lambda status: True, HANG_GUARD_S)
        assert status is not None, camera
        values = diagnostics[camera].values()
        assert int(values['frames published']) >= 1
        assert values['backend'] == 'onnxruntime'
        assert 'frames without depth (no camera_info yet)' in values
        assert values['tracker restarts (time jumps)'].isdigit()
    engine = diagnostics['engine'].wait_for(lambda status: True, HANG_GUARD_S)
    assert engine is not None
    values = diagnostics['engine'].values()
    assert values['cameras'] == '4'
    assert int(values['batches']) >= 1 and 1 <= int(values['largest batch']) <= 4
    assert float(values['engine time per batch, median (ms)']) > 0

    for camera, client in cameras.items():
        assert client.spin_until(lambda: client.label_infos, HANG_GUARD_S), camera
        assert {(c.class_id, c.class_name) for c in client.label_infos[-1].class_map} == {
            (0, 'Normal'), (1, 'Fall')}
        prefix = f'{NAMESPACE}/{camera}/'
        assert listener.get_publishers_info_by_topic(prefix + 'detections_3d'), camera
        assert listener.get_subscriptions_info_by_topic(prefix + 'depth_image'), camera
        assert listener.get_subscriptions_info_by_topic(prefix + 'camera_info'), camera


def test_one_parameter_set_applies_to_every_camera(cameras, listener, two_people):
    assert not ros2_param_set(listener, NODE, 'cameras', '[front]').successful
    assert ros2_param_set(listener, NODE, 'conf_threshold', '0.95').successful
    try:
        answers = detect_all(cameras, {camera: two_people for camera in CAMERAS})
        assert all(not msg.detections for _, msg in answers.values())
        for camera, client in cameras.items():
            assert client.spin_until(
                lambda: client.label_infos[-1].threshold == pytest.approx(0.95),
                HANG_GUARD_S), camera
    finally:
        assert ros2_param_set(listener, NODE, 'conf_threshold', '0.5').successful
    answers = detect_all(cameras, {'front': two_people})
    assert answers['front'][1].detections


def test_deactivate_unsubscribes_every_camera_and_activate_resumes_them(
        cameras, listener, two_people):
    assert ros2_lifecycle_set(listener, NODE, 'deactivate')
    for camera, client in cameras.items():
        assert client.spin_until(lambda: client.image_pub.get_subscription_count() == 0,
                                 HANG_GUARD_S), camera
        client.label_infos.clear()
    assert ros2_lifecycle_set(listener, NODE, 'activate')
    for camera, client in cameras.items():
        assert client.wait_for_detector(STARTUP_S), camera
        assert client.spin_until(lambda: client.label_infos, HANG_GUARD_S), camera
    answers = detect_all(cameras, {camera: two_people for camera in CAMERAS})
    assert all(msg.detections for _, msg in answers.values())
