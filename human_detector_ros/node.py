"""The `human_detector` node: camera images in, vision_msgs detections out.

A thin layer over the ROS-free core: it declares parameters, converts messages, calls
`HumanDetector` and publishes what it finds with the input's header unchanged.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from human_detector_ros.annotate import draw_detections
from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import (
    HumanDetectorError, InvalidImageError, InvalidParameterError)
from human_detector_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from human_detector_ros.node_parameters import PARAMETERS, PARAMETERS_BY_NAME
from human_detector_ros.postprocess import NmsConfig
from human_detector_ros.ros_entry import run_node
from human_detector_ros.ros_messages import (
    bgr_to_image_msg, detections_to_msg, label_info_msg)

# Keep only the newest frame: a deeper queue only adds latency.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
LABEL_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
LOG_THROTTLE_S = 5.0


class HumanDetectorNode(Node):
    """Subscribes `image` (or `<image>/compressed`), publishes `detections`, `label_info`
    and `annotated_image`."""

    def __init__(self) -> None:
        super().__init__('human_detector')
        self._values = self._declare_parameters()
        self._detector = HumanDetector(
            model_path=self._values['engine_path'] or None,
            backend=self._values['backend'], device=self._values['device'])
        self._detector.config = self._nms_config(self._values)
        self.frames_received = 0
        self.frames_published = 0
        self.frames_dropped = 0

        self._detections_pub = self.create_publisher(Detection2DArray, 'detections', 10)
        self._annotated_pub = self.create_publisher(Image, 'annotated_image', 1)
        self._label_info_pub = self.create_publisher(LabelInfo, 'label_info', LABEL_INFO_QOS)
        compressed = self._values['input_transport'] == 'compressed'
        self._to_bgr = compressed_msg_to_bgr if compressed else image_msg_to_bgr
        topic = self.resolve_topic_name('image') + '/compressed' if compressed else 'image'
        self._image_sub = self.create_subscription(
            CompressedImage if compressed else Image, topic, self._on_image, IMAGE_QOS,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish_label_info()
        engine = self._detector.engine
        self.get_logger().info(
            f'{engine.backend} on {engine.device}: {engine.model_path}; '
            f'listening on {self._image_sub.topic_name}')

    def _declare_parameters(self) -> Dict[str, Any]:
        values = {}
        for spec in PARAMETERS:
            try:
                value = self.declare_parameter(spec.name, spec.default, spec.descriptor()).value
            except ParameterException as error:
                raise InvalidParameterError(f'parameter {spec.name}: {error}') from error
            problem = spec.problem(value)
            if problem:
                raise InvalidParameterError(
                    f'parameter {spec.name} = {value!r}: {problem}. Fix it in the params '
                    'file or on the command line (-p name:=value).')
            values[spec.name] = value
        return values

    @staticmethod
    def _nms_config(values: Dict[str, Any]) -> NmsConfig:
        return NmsConfig(
            conf_threshold=values['conf_threshold'], iou_threshold=values['iou_threshold'],
            max_det=values['max_det'], classes=tuple(values['classes'] or ()) or None,
            agnostic=values['agnostic_nms'])

    def class_names(self) -> Dict[int, str]:
        """`class_names` when set, else the names stored in the model."""
        names = self._values['class_names']
        return dict(enumerate(names)) if names else dict(self._detector.names)

    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._label_info_pub.publish(
            label_info_msg(self.class_names(), self._values['conf_threshold'], header))

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue
            problem = spec.problem(parameter.value)
            if problem:
                return SetParametersResult(successful=False,
                                           reason=f'{parameter.name}: {problem}')
            updates[parameter.name] = parameter.value
        if updates:
            self._values.update(updates)
            self._detector.config = self._nms_config(self._values)
            if {'class_names', 'conf_threshold'} & set(updates):
                self._publish_label_info()
        return SetParametersResult(successful=True)

    def _on_image(self, msg: Any) -> None:
        self.frames_received += 1
        try:
            bgr = self._to_bgr(msg)
            detections = self._detector(bgr)
        except HumanDetectorError as error:
            self._drop(error)
            return
        self._detections_pub.publish(detections_to_msg(detections, msg.header))
        self.frames_published += 1
        if self._values['publish_annotated'] and self._annotated_pub.get_subscription_count():
            annotated = draw_detections(bgr, detections, self.class_names())
            self._annotated_pub.publish(bgr_to_image_msg(annotated, msg.header))

    def _drop(self, error: HumanDetectorError) -> None:
        self.frames_dropped += 1
        kind = 'invalid image' if isinstance(error, InvalidImageError) else 'inference failed'
        self.get_logger().warn(
            f'dropped frame ({kind}, {self.frames_dropped} dropped so far): {error}',
            throttle_duration_sec=LOG_THROTTLE_S)


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of `ros2 run human_detector_ros human_detector`; returns the exit code."""
    return run_node(HumanDetectorNode, 'human_detector', args)


if __name__ == '__main__':
    sys.exit(main())
