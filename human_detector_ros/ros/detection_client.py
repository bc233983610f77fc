"""A client of the human_detector node: send a frame, wait for the detections of that frame.

Used by the demo and the tests; also handy to query a running node from a script. Answers are
matched to frames by the header stamp, which the node copies unchanged.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from human_detector_ros.depth import Intrinsics

from human_detector_ros.ros.messages import bgr_to_image_msg

StampKey = Tuple[int, int]


def stamp_key(header: Header) -> StampKey:
    """(sec, nanosec) of a header: the key that ties an output to its input frame."""
    return header.stamp.sec, header.stamp.nanosec


class DetectionClient(Node):
    """Publishes frames on `image_topic`; collects `detections`, `label_info` and, once
    `subscribe_annotated()` / `subscribe_3d()` are called, `annotated_image` /
    `detections_3d`, all keyed by stamp. `publish_depth` plays the depth camera. Relative
    topic names are inside `namespace` (e.g. one camera of a node with `cameras`)."""

    def __init__(self, name: str, image_topic: str = 'image',
                 namespace: Optional[str] = None) -> None:
        super().__init__(name, namespace=namespace)
        self.image_pub = self.create_publisher(Image, image_topic, 1)
        self.detections: Dict[StampKey, Detection2DArray] = {}
        self.annotated: Dict[StampKey, Image] = {}
        self.detections_3d: Dict[StampKey, Detection3DArray] = {}
        self.depth_pub = self.create_publisher(Image, 'depth_image', 10)
        self.camera_info_pub = self.create_publisher(CameraInfo, 'camera_info', 10)
        self.label_infos: List[LabelInfo] = []
        self.annotated_sub = None
        self.create_subscription(Detection2DArray, 'detections', self._on_detections, 10)
        self.create_subscription(
            LabelInfo, 'label_info', self.label_infos.append,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                       reliability=ReliabilityPolicy.RELIABLE))

    def _on_detections(self, msg: Detection2DArray) -> None:
        self.detections[stamp_key(msg.header)] = msg

    def _on_annotated(self, msg: Image) -> None:
        self.annotated[stamp_key(msg.header)] = msg

    def subscribe_annotated(self) -> None:
        """Start receiving `annotated_image` (the node draws only while someone listens)."""
        if self.annotated_sub is None:
            self.annotated_sub = self.create_subscription(
                Image, 'annotated_image', self._on_annotated, 10)

    def subscribe_3d(self) -> None:
        """Start receiving `detections_3d`."""
        self.create_subscription(Detection3DArray, 'detections_3d', self._on_detections_3d, 10)

    def _on_detections_3d(self, msg: Detection3DArray) -> None:
        self.detections_3d[stamp_key(msg.header)] = msg

    def publish_depth(self, header: Header, encoding: str, height: int, width: int, step: int,
                      data: bytes, intrinsics: Intrinsics) -> None:
        """Publish a little-endian depth image and the colour camera's CameraInfo (K from
        `intrinsics`), both with `header`."""
        self.camera_info_pub.publish(CameraInfo(
            header=header, height=height, width=width, distortion_model='plumb_bob',
            d=[0.0] * 5, k=[intrinsics.fx, 0.0, intrinsics.cx, 0.0, intrinsics.fy,
                            intrinsics.cy, 0.0, 0.0, 1.0]))
        self.depth_pub.publish(Image(header=header, height=height, width=width,
                                     encoding=encoding, is_bigendian=False, step=step,
                                     data=data))

    def class_names(self) -> Dict[str, str]:
        """class_id string -> name, from the newest label_info received."""
        if not self.label_infos:
            return {}
        return {str(entry.class_id): entry.class_name
                for entry in self.label_infos[-1].class_map}

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Spin until `done()` holds or `timeout_s` passes; return `done()`."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not done():
            rclpy.spin_once(self, timeout_sec=0.05)
        return done()

    def wait_for_detector(self, timeout_s: float) -> bool:
        """True once a node subscribes to the image topic."""
        return self.spin_until(lambda: self.image_pub.get_subscription_count() > 0, timeout_s)

    def publish_frame(self, bgr: np.ndarray, frame_id: str,
                      header: Optional[Header] = None) -> Header:
        """Publish an HxWx3 BGR frame with `header` (default: stamped now); return the
        header."""
        header = header or Header(stamp=self.get_clock().now().to_msg(), frame_id=frame_id)
        self.image_pub.publish(bgr_to_image_msg(bgr, header))
        return header

    def detect(self, bgr: np.ndarray, frame_id: str = 'camera', timeout_s: float = 30.0,
               resend_after_s: float = 2.0, with_annotated: bool = False,
               header: Optional[Header] = None) -> Optional[Tuple[Header, Detection2DArray]]:
        """Publish a frame and wait for its answer. A frame can be lost on the way (a
        best-effort reader drops samples of a writer it has not matched yet), so while no
        answer comes the frame is sent again every `resend_after_s`, stamped anew unless
        `header` is given. Returns the header of the first copy answered (a copy sent earlier
        may be answered after a later one was sent: the node's inference can take longer
        than `resend_after_s`) and its detections; None after `timeout_s`."""
        end = time.monotonic() + timeout_s
        sent: Dict[StampKey, Header] = {}

        def answered() -> Optional[StampKey]:
            return next((key for key in sent if key in self.detections and (
                not with_annotated or key in self.annotated)), None)

        while time.monotonic() < end:
            copy = self.publish_frame(bgr, frame_id, header)
            sent[stamp_key(copy)] = copy
            wait_s = min(resend_after_s, end - time.monotonic())
            if self.spin_until(lambda: answered() is not None, wait_s):
                key = answered()
                return sent[key], self.detections[key]
        return None
