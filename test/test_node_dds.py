"""The human_detector node in its own process, a camera in another, this test as listener.

Everything goes over real FastDDS; the node is started as `ros2 run`/launch would start it.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import cv2
import numpy as np
import pytest
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.detector import HumanDetector
from human_detector_ros.image_conversion import image_msg_to_bgr
from human_detector_ros.image_conversion import read_bgr
from ros_harness import (
    UPSTREAM_TYPE_HASHES, detector_command, RosProcess, ros2_param_delete, ros2_param_get,
    ros2_param_set)

STARTUP_S = 60.0
NODE = '/human_detector'
ANSWER_S = 30.0


def boxes_of(msg: Detection2DArray) -> np.ndarray:
    """(N, 6) rows x1, y1, x2, y2, score, class from a Detection2DArray."""
    rows = []
    for detection in msg.detections:
        box = detection.bbox
        hypothesis = detection.results[0].hypothesis
        rows.append([box.center.position.x - box.size_x / 2,
                     box.center.position.y - box.size_y / 2,
                     box.center.position.x + box.size_x / 2,
                     box.center.position.y + box.size_y / 2,
                     hypothesis.score, int(hypothesis.class_id)])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


@pytest.fixture(scope='module')
def detector_node(rclpy_context, tmp_path_factory) -> Iterator[RosProcess]:
    log = tmp_path_factory.mktemp('node') / 'human_detector.log'
    process = RosProcess(detector_command('-r', 'image:=/test/camera/image'), log)
    yield process
    assert process.stop() == 0, process.output()
    assert 'Traceback' not in process.output()


@pytest.fixture(scope='module')
def client(detector_node) -> Iterator[DetectionClient]:
    node = DetectionClient('detector_test_client', '/test/camera/image')
    assert node.wait_for_detector(STARTUP_S), detector_node.output()
    yield node
    node.destroy_node()


def detect(client: DetectionClient, bgr: np.ndarray, frame_id: str = 'test_camera',
           with_annotated: bool = False) -> Tuple[Header, Detection2DArray]:
    answer = client.detect(bgr, frame_id, ANSWER_S, with_annotated=with_annotated)
    assert answer is not None, 'no Detection2DArray for a published frame'
    return answer


@pytest.fixture(scope='module')
def reference() -> HumanDetector:
    """The core with the node's default NMS: agnostic, unlike the core's own default."""
    return HumanDetector(agnostic_nms=True)


def test_detections_have_input_header_and_source_pixel_boxes(client, reference):
    frame = read_bgr(str(sample_image_path('camera.png')))
    header, msg = detect(client, frame, frame_id='test_camera_optical_frame')
    assert msg.header == header
    assert all(d.header == header for d in msg.detections)
    expected = reference(frame)
    got = boxes_of(msg)
    assert len(got) == len(expected) >= 1
    np.testing.assert_allclose(got[:, :4], expected.boxes, atol=1e-3)
    np.testing.assert_allclose(got[:, 4], expected.scores, atol=1e-6)
    np.testing.assert_array_equal(got[:, 5], expected.class_ids)
    assert got[0, 5] == 0 and got[0, 4] > 0.5


def test_messages_carry_the_upstream_vision_msgs_type_hashes(client):
    for topic, type_name in (('/detections', 'vision_msgs/msg/Detection2DArray'),
                             ('/label_info', 'vision_msgs/msg/LabelInfo')):
        infos = client.get_publishers_info_by_topic(topic)
        assert infos, f'nobody publishes {topic}'
        assert str(infos[0].topic_type_hash) == UPSTREAM_TYPE_HASHES[type_name]


@pytest.fixture
def two_people() -> np.ndarray:
    """A wide frame (1112x512) where the default model finds class 1 and class 0 above 0.5."""
    astronaut = read_bgr(str(sample_image_path('astronaut.png')))
    return cv2.copyMakeBorder(astronaut, 0, 0, 300, 300, cv2.BORDER_CONSTANT,
                              value=(114, 114, 114))


@pytest.fixture
def restore_parameters(client) -> Iterator[None]:
    yield
    for name, text in (('conf_threshold', '0.5'), ('iou_threshold', '0.45'),
                       ('max_det', '300'), ('classes', '[]'), ('agnostic_nms', 'true'),
                       ('class_names', '[]'), ('publish_annotated', 'true')):
        assert ros2_param_set(client, NODE, name, text).successful, name


def assert_same_detections(msg: Detection2DArray, expected) -> None:
    got = boxes_of(msg)
    assert len(got) == len(expected)
    np.testing.assert_allclose(got[:, :4], expected.boxes, atol=1e-3)
    np.testing.assert_allclose(got[:, 4], expected.scores, atol=1e-6)
    np.testing.assert_array_equal(got[:, 5], expected.class_ids)


def test_empty_scene_gives_an_empty_array_with_the_input_header(client):
    header, msg = detect(client, read_bgr(str(sample_image_path('coffee.png'))))
    assert msg.header == header
    assert len(msg.detections) == 0


def test_label_info_maps_class_ids_to_the_model_names(client):
    assert client.spin_until(lambda: client.label_infos, ANSWER_S)
    info = client.label_infos[-1]
    assert {(c.class_id, c.class_name) for c in info.class_map} == {(0, 'Normal'), (1, 'Fall')}
    assert info.threshold == pytest.approx(0.5)


def test_annotated_image_has_the_input_header_and_the_boxes_drawn(client, two_people):
    client.subscribe_annotated()
    assert client.spin_until(lambda: client.get_publishers_info_by_topic('/annotated_image'),
                             ANSWER_S)
    header, msg = detect(client, two_people, with_annotated=True)
    annotated = client.annotated[stamp_key(header)]
    assert annotated.header == header
    picture = image_msg_to_bgr(annotated)
    assert picture.shape == two_people.shape
    x1, y1, x2, y2 = boxes_of(msg)[0, :4].round().astype(int)
    outside = np.ones(two_people.shape[:2], bool)
    outside[max(y1 - 40, 0):y2 + 5, max(x1 - 5, 0):x2 + 5] = False
    assert (picture != two_people).any(axis=2)[y1:y2, x1].mean() > 0.9
    np.testing.assert_array_equal(picture[outside], two_people[outside])


def test_live_parameters_change_the_next_frame(client, reference, two_people,
                                               restore_parameters):
    _, msg = detect(client, two_people)
    assert_same_detections(msg, reference(two_people))

    assert ros2_param_set(client, NODE, 'agnostic_nms', 'false').successful
    _, msg = detect(client, two_people)
    assert set(boxes_of(msg)[:, 5]) == {0, 1}
    assert_same_detections(msg, HumanDetector()(two_people))

    assert ros2_param_set(client, NODE, 'classes', '[1]').successful
    _, msg = detect(client, two_people)
    assert set(boxes_of(msg)[:, 5]) == {1}
    assert ros2_param_set(client, NODE, 'classes', '[]').successful

    assert ros2_param_set(client, NODE, 'conf_threshold', '0.95').successful
    _, msg = detect(client, two_people)
    assert len(msg.detections) == 0
    assert client.spin_until(
        lambda: client.label_infos[-1].threshold == pytest.approx(0.95), ANSWER_S)


def test_class_names_parameter_replaces_the_model_names(client, restore_parameters):
    assert ros2_param_set(client, NODE, 'class_names', '["person", "fallen person"]').successful
    assert client.spin_until(lambda: client.class_names() == {
        '0': 'person', '1': 'fallen person'}, ANSWER_S)


@pytest.mark.parametrize('name, text, reason', [
    ('conf_threshold', '1.5', ''),
    ('conf_threshold', 'high', ''),
    ('iou_threshold', '-0.1', ''),
    ('max_det', '0', ''),
    ('classes', '[-1]', 'class indices'),
    ('classes', '[true]', 'class indices'),
    ('class_names', '[1, 2]', 'strings'),
    ('engine_path', '/tmp/other.onnx', 'read-only'),
    ('backend', 'tensorrt', 'read-only'),
    ('tensorrt_precision', 'fp32', 'read-only'),
])
def test_invalid_values_are_rejected_with_a_reason(client, reference, name, text, reason):
    result = ros2_param_set(client, NODE, name, text)
    assert not result.successful
    assert result.reason and reason in result.reason
    frame = read_bgr(str(sample_image_path('camera.png')))
    _, msg = detect(client, frame)
    assert_same_detections(msg, reference(frame))


def test_deleting_a_parameter_unsets_a_list_and_is_refused_otherwise(
        client, restore_parameters):
    # rclpy would undeclare a list that accepts "not set", and later sets of it would fail.
    assert ros2_param_set(client, NODE, 'classes', '[1]').successful
    assert ros2_param_delete(client, NODE, 'classes').successful
    assert ros2_param_get(client, NODE, 'classes') == []
    assert ros2_param_set(client, NODE, 'classes', '[0]').successful
    result = ros2_param_delete(client, NODE, 'conf_threshold')
    assert not result.successful and 'cannot be deleted' in result.reason
    assert ros2_param_get(client, NODE, 'conf_threshold') == pytest.approx(0.5)


def test_publish_annotated_false_stops_the_annotated_image(client, two_people,
                                                           restore_parameters):
    client.subscribe_annotated()
    assert ros2_param_set(client, NODE, 'publish_annotated', 'false').successful
    header, _ = detect(client, two_people)
    client.spin_until(lambda: False, 1.0)
    assert stamp_key(header) not in client.annotated
    assert ros2_param_set(client, NODE, 'publish_annotated', 'true').successful
    header, _ = detect(client, two_people, with_annotated=True)
    assert stamp_key(header) in client.annotated
