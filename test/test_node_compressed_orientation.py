"""A JPEG with an EXIF Orientation on the compressed input: the node detects on the pixels as
stored, the frame that image_transport, cv_bridge and RViz show, not on a turned copy."""
from __future__ import annotations

from typing import Iterator, List

import cv2
import numpy as np
import pytest
from exif_images import with_exif_orientation
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header
from test_node_dds import boxes_of
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.detector import HumanDetector
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from ros_harness import detector_command, RosProcess

STARTUP_S = 60.0
ANSWER_S = 30.0
TOPIC = '/exif_cam/image'


@pytest.fixture(scope='module')
def wide_jpeg() -> bytes:
    """A 1024x512 JPEG of a person, off-centre so that any turn moves the box."""
    astronaut = read_bgr(str(sample_image_path('astronaut.png')))
    frame = cv2.copyMakeBorder(astronaut, 0, 0, 100, 412, cv2.BORDER_CONSTANT,
                               value=(114, 114, 114))
    assert frame.shape == (512, 1024, 3)
    return cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.fixture(scope='module')
def compressed_node(rclpy_context, tmp_path_factory) -> Iterator[RosProcess]:
    """One node on compressed input for every orientation: each frame is answered alone."""
    log = tmp_path_factory.mktemp('node') / 'human_detector.log'
    process = RosProcess(detector_command(
        '-r', '__node:=exif_detector', '-p', 'input_transport:=compressed',
        '-r', f'image:={TOPIC}', '-r', 'detections:=/exif_cam/detections'), log)
    yield process
    assert process.stop() == 0, process.output()
    assert 'Traceback' not in process.output()


@pytest.mark.parametrize('orientation', [6, 3])
def test_exif_orientation_does_not_turn_the_frame_before_detection(
        compressed_node, wide_jpeg, orientation):
    node = compressed_node
    stored = cv2.imdecode(np.frombuffer(wide_jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = HumanDetector(agnostic_nms=True)(stored)
    assert len(expected) >= 1
    client = DetectionClient(f'exif{orientation}_client', '/unused/image')
    received: List[Detection2DArray] = []
    client.create_subscription(Detection2DArray, '/exif_cam/detections', received.append, 10)
    publisher = client.create_publisher(CompressedImage, TOPIC + '/compressed', 1)
    msg = CompressedImage(format='jpeg', data=with_exif_orientation(wide_jpeg, orientation))
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, STARTUP_S), \
            node.output()
        answer = None
        for _ in range(10):
            msg.header = Header(stamp=client.get_clock().now().to_msg(), frame_id='exif_cam')
            publisher.publish(msg)
            key = stamp_key(msg.header)
            if client.spin_until(lambda: any(stamp_key(d.header) == key for d in received),
                                 ANSWER_S / 10):
                answer = next(d for d in received if stamp_key(d.header) == key)
                break
    finally:
        client.destroy_node()
    assert answer is not None, node.output()
    got = boxes_of(answer)
    assert len(got) == len(expected)
    np.testing.assert_allclose(got[:, :4], expected.boxes, atol=1e-3)
    np.testing.assert_allclose(got[:, 4], expected.scores, atol=1e-6)
    np.testing.assert_array_equal(got[:, 5], expected.class_ids)
