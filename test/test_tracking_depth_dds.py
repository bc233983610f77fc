"""Track ids and 3D positions over real DDS: the node in its own process with the real default
model, this test as colour camera, depth camera and listener.

Every frame is sent once, reliably (QoS overrides make the node's inputs reliable and deep),
and the test waits for its answer, matched by stamp; depth frames are acknowledged through
/diagnostics before their colour frame is sent. Nothing depends on timing or DDS losses.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray

from human_detector_ros.depth import Intrinsics
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.synthetic import (
    CANVAS_SHAPE, Person, depth_metres, encode_depth, render, walking_sequence)
from ros_harness import (
    UPSTREAM_TYPE_HASHES, DiagnosticsMonitor, RosProcess, deep_reliable_input, detector_command,
    ros2_param_set)

STARTUP_S = 60.0
ANSWER_S = 120.0
FRAME_ID = 'camera_color_optical_frame'
INTRINSICS = Intrinsics(fx=600.0, fy=605.0, cx=640.5, cy=362.0)


@pytest.fixture(scope='module')
def node(rclpy_context, tmp_path_factory) -> Iterator[RosProcess]:
    arguments = ['-p', 'depth:=true']
    for topic in ('/image', '/depth_image', '/camera_info'):
        arguments += deep_reliable_input(topic)
    process = RosProcess(detector_command(*arguments),
                         tmp_path_factory.mktemp('node') / 'human_detector.log')
    yield process
    assert process.stop() == 0, process.output()
    assert 'Traceback' not in process.output()


@pytest.fixture(scope='module')
def client(node) -> Iterator[DetectionClient]:
    client = DetectionClient('tracking_depth_test_client')
    client.subscribe_3d()
    assert client.wait_for_detector(STARTUP_S), node.output()
    assert client.spin_until(lambda: client.depth_pub.get_subscription_count() > 0, STARTUP_S)
    yield client
    client.destroy_node()


@pytest.fixture(scope='module')
def diagnostics(client) -> Iterator[DiagnosticsMonitor]:
    monitor = DiagnosticsMonitor(client)
    yield monitor
    monitor.destroy()


def header_at(seconds: float) -> Header:
    nanoseconds = int(round(seconds * 1e9))
    return Header(stamp=Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9),
                  frame_id=FRAME_ID)


def send(client: DetectionClient, bgr: np.ndarray, header: Header) -> Detection2DArray:
    client.publish_frame(bgr, FRAME_ID, header)
    key = stamp_key(header)
    assert client.spin_until(lambda: key in client.detections, ANSWER_S), 'no answer'
    return client.detections[key]


def iou(box: Tuple[float, ...], rect: Tuple[int, ...]) -> float:
    width = max(0.0, min(box[2], rect[2]) - max(box[0], rect[0]))
    height = max(0.0, min(box[3], rect[3]) - max(box[1], rect[1]))
    union = ((box[2] - box[0]) * (box[3] - box[1]) + (rect[2] - rect[0]) * (rect[3] - rect[1])
             - width * height)
    return width * height / union


def corners(detection: Detection2D) -> Tuple[float, float, float, float]:
    box = detection.bbox
    x, y = box.center.position.x, box.center.position.y
    return x - box.size_x / 2, y - box.size_y / 2, x + box.size_x / 2, y + box.size_y / 2


def who(detection: Detection2D, rects: Dict[str, Tuple[int, int, int, int]]) -> str:
    """The person whose pasted portrait the box overlaps most (the truth of the scene)."""
    name = max(rects, key=lambda person: iou(corners(detection), rects[person]))
    assert iou(corners(detection), rects[name]) > 0.4, (corners(detection), rects)
    return name


def test_each_person_keeps_one_id_through_the_walking_sequence(client, diagnostics):
    start = 1000.0
    seen: Dict[str, List[Tuple[int, str, str]]] = {'astronaut': [], 'camera': []}
    for frame in walking_sequence():
        bgr, rects = render(frame.people)
        for detection in send(client, bgr, header_at(start + frame.stamp_s)).detections:
            seen[who(detection, rects)].append(
                (frame.index, detection.id, detection.results[0].hypothesis.class_id))
    switches = sum(previous[1] != current[1] for track in seen.values()
                   for previous, current in zip(track, track[1:]))
    print(f'id switches: {switches}; ids: '
          f'{ {name: sorted({i for _, i, _ in track}) for name, track in seen.items()} }')
    assert switches == 0
    ids = {name: {track_id for _, track_id, _ in track} for name, track in seen.items()}
    assert len(ids['astronaut']) == len(ids['camera']) == 1
    assert ids['astronaut'] != ids['camera'] and '' not in ids['astronaut'] | ids['camera']
    # The astronaut is hidden in frames 6-8 and seen again; their class flips on the way.
    astronaut_frames = [index for index, _, _ in seen['astronaut']]
    assert min(astronaut_frames) < 6 and max(astronaut_frames) > 9
    assert {class_id for _, _, class_id in seen['astronaut']} == {'0', '1'}
    assert len(seen['camera']) == len(walking_sequence())


def test_a_stamp_going_backwards_restarts_the_tracker_with_new_ids(client, diagnostics):
    before = {detection.id for detection in client.detections[max(client.detections)].detections}
    bgr, _ = render(walking_sequence()[0].people)
    after = {detection.id for detection in send(client, bgr, header_at(500.0)).detections}
    assert len(after) == 2 and '' not in after
    assert min(int(track_id) for track_id in after) > max(int(track_id) for track_id in before)
    status = diagnostics.wait_for(lambda s: any(
        kv.key == 'tracker restarts (time jumps)' and kv.value == '1' for kv in s.values),
        ANSWER_S)
    assert status is not None


def send_with_depth(client: DetectionClient, diagnostics: DiagnosticsMonitor, stamp_s: float,
                    encoding: str, depths: Dict[str, Optional[float]]
                    ) -> Tuple[Dict[str, Tuple[int, int, int, int]], Detection2DArray,
                               Detection3DArray]:
    people = {'astronaut': Person('astronaut.png', 60, 100),
              'camera': Person('camera.png', 700, 100)}
    bgr, rects = render(people)
    step, data = encode_depth(depth_metres(rects, depths), encoding)
    header = header_at(stamp_s)
    received = int(diagnostics.values().get('depth frames received', '0'))
    client.publish_depth(header, encoding, CANVAS_SHAPE[0], CANVAS_SHAPE[1], step, data,
                         INTRINSICS)

    def acknowledged(status) -> bool:
        values = {kv.key: kv.value for kv in status.values}
        return int(values.get('depth frames received', 0)) > received and \
            int(values.get('camera_info received', 0)) > received
    assert diagnostics.wait_for(acknowledged, ANSWER_S) is not None
    detections = send(client, bgr, header)
    key = stamp_key(header)
    assert client.spin_until(lambda: key in client.detections_3d, ANSWER_S)
    return rects, detections, client.detections_3d[key]


@pytest.mark.parametrize('encoding, depths', [
    ('16UC1', {'astronaut': 1.0, 'camera': 8.0}),
    ('32FC1', {'astronaut': 8.0, 'camera': 1.0}),
    ('16UC1', {'astronaut': 3.3, 'camera': 5.55}),
    ('32FC1', {'astronaut': 2.25, 'camera': 6.7}),
    ('16UC1', {'astronaut': 4.0, 'camera': None}),
    ('32FC1', {'astronaut': None, 'camera': 2.0}),
])
def test_positions_from_depth_within_2_cm_of_the_truth(client, diagnostics, encoding, depths):
    before = diagnostics.values()
    rects, flat, spatial = send_with_depth(client, diagnostics, 2000.0 + len(client.detections),
                                           encoding, depths)
    assert spatial.header == flat.header
    assert len(flat.detections) == 2
    by_id = {detection.id: detection for detection in spatial.detections}
    assert len(by_id) == len(spatial.detections) == sum(z is not None for z in depths.values())
    for detection in flat.detections:
        z = depths[who(detection, rects)]
        if z is None:
            assert detection.id not in by_id
            continue
        found = by_id[detection.id]
        assert found.header == flat.header
        assert found.results[0].hypothesis == detection.results[0].hypothesis
        u, v = detection.bbox.center.position.x, detection.bbox.center.position.y
        position = found.bbox.center.position
        np.testing.assert_allclose(
            (position.x, position.y, position.z),
            ((u - INTRINSICS.cx) * z / INTRINSICS.fx, (v - INTRINSICS.cy) * z / INTRINSICS.fy,
             z), atol=0.02)
        assert found.bbox.size.x == pytest.approx(detection.bbox.size_x * z / INTRINSICS.fx,
                                                  abs=0.02)
        assert found.bbox.size.y == pytest.approx(detection.bbox.size_y * z / INTRINSICS.fy,
                                                  abs=0.02)
        assert found.bbox.center.orientation.w == 1.0
    missing = sum(z is None for z in depths.values())
    after = diagnostics.wait_for(lambda status: any(
        kv.key == 'frames with depth' and
        int(kv.value) > int(before.get('frames with depth', 0)) for kv in status.values), ANSWER_S)
    values = {kv.key: kv.value for kv in after.values}
    assert int(values['boxes without valid depth']) == \
        int(before.get('boxes without valid depth', 0)) + missing


def test_a_frame_without_a_depth_frame_is_counted_and_gets_no_3d(client, diagnostics):
    key_name = 'frames without depth (no depth frame within tolerance)'
    before = int(diagnostics.values().get(key_name, 0))
    bgr, _ = render({'camera': Person('camera.png', 700, 100)})
    header = header_at(5000.0)
    assert len(send(client, bgr, header).detections) == 1
    assert diagnostics.wait_for(lambda status: any(
        kv.key == key_name and int(kv.value) == before + 1 for kv in status.values), ANSWER_S)
    assert stamp_key(header) not in client.detections_3d


def count(status, key: str) -> int:
    return int({kv.key: kv.value for kv in status.values}.get(key, 0))


def test_bad_depth_input_is_dropped_and_counted(client, diagnostics):
    keys = ('depth frames dropped (invalid)', 'camera_info rejected (not calibrated)',
            'frames without depth (depth size differs from image)', 'depth frames received')
    before = {key: int(diagnostics.values().get(key, 0)) for key in keys}
    header = header_at(6000.0)
    client.camera_info_pub.publish(CameraInfo(header=header, width=1280, height=720))
    client.depth_pub.publish(Image(header=header, height=2, width=2, encoding='mono8', step=2,
                                   data=bytes(4)))
    step, data = encode_depth(np.full((360, 640), 2.0, np.float32), '16UC1')
    client.depth_pub.publish(Image(header=header, height=360, width=640, encoding='16UC1',
                                   step=step, data=data))
    assert diagnostics.wait_for(lambda status: all(
        count(status, key) == before[key] + 1 for key in keys[:2] + keys[3:]), ANSWER_S)
    bgr, _ = render({'camera': Person('camera.png', 700, 100)})
    assert len(send(client, bgr, header).detections) == 1
    assert diagnostics.wait_for(lambda status: count(status, keys[2]) == before[keys[2]] + 1,
                                ANSWER_S)
    assert stamp_key(header) not in client.detections_3d


def test_tracking_off_and_on_live(client):
    bgr, _ = render(walking_sequence()[0].people)
    assert ros2_param_set(client, '/human_detector', 'tracking', 'false').successful
    assert {d.id for d in send(client, bgr, header_at(7000.0)).detections} == {''}
    assert ros2_param_set(client, '/human_detector', 'tracking', 'true').successful
    ids = {d.id for d in send(client, bgr, header_at(7000.1)).detections}
    assert len(ids) == 2 and '' not in ids
    result = ros2_param_set(client, '/human_detector', 'tracking_lost_s', '100.0')
    assert not result.successful
    assert ros2_param_set(client, '/human_detector', 'tracking_lost_s', '2.0').successful


def test_detections_3d_carry_the_upstream_type_hash(client):
    infos = client.get_publishers_info_by_topic('/detections_3d')
    assert infos and str(infos[0].topic_type_hash) == \
        UPSTREAM_TYPE_HASHES['vision_msgs/msg/Detection3DArray']
