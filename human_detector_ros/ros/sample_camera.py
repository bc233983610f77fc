"""`sample_camera`: publishes image files as a camera would, to try the detector without one.

Parameters: `images` (paths; default: the fetched sample images), `rate_hz`, `frame_id`.
Publishes sensor_msgs/Image bgr8 on `image`, stamped with the publishing time.
"""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from human_detector_ros.assets import SAMPLE_IMAGES, sample_image_path
from human_detector_ros.errors import InvalidParameterError
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.messages import bgr_to_image_msg


class SampleCamera(Node):
    """Publishes its images in turn on `image` at `rate_hz`."""

    def __init__(self) -> None:
        super().__init__('sample_camera')
        defaults = [str(sample_image_path(name)) for name in SAMPLE_IMAGES]
        paths = self.declare_parameter('images', defaults).value
        rate_hz = self.declare_parameter('rate_hz', 2.0, ParameterDescriptor(
            description='Frames per second', floating_point_range=[
                FloatingPointRange(from_value=0.01, to_value=1000.0)])).value
        if not paths:
            raise InvalidParameterError('images is empty: give at least one image file')
        self._frame_id = self.declare_parameter('frame_id', 'camera').value
        self._frames = [read_bgr(path) for path in paths]
        self._next = 0
        self._publisher = self.create_publisher(Image, 'image', 1)
        self.create_timer(1.0 / rate_hz, self._publish_next)

    def _publish_next(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
        self._publisher.publish(bgr_to_image_msg(self._frames[self._next], header))
        self._next = (self._next + 1) % len(self._frames)
