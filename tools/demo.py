"""The README's demo: the human_detector node, in its own process, on the sample images.

This process plays camera and listener: it publishes each sample image, waits for the node's
Detection2DArray and annotated image with the same stamp, prints what was found and writes
the annotated picture to --output-dir.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import rclpy
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from human_detector_ros.assets import SAMPLE_IMAGES, sample_image_path
from human_detector_ros.dds_profile import large_image_environment
from human_detector_ros.image_conversion import image_msg_to_bgr
from human_detector_ros.ros_messages import bgr_to_image_msg
from human_detector_ros.sample_camera import read_bgr

PACKAGE = 'human_detector_ros'


class DemoClient(Node):
    """Publishes frames on `image`; collects `detections`, `annotated_image`, `label_info`."""

    def __init__(self) -> None:
        super().__init__('human_detector_demo')
        self.image_pub = self.create_publisher(Image, 'image', 1)
        self.detections: Dict[str, Detection2DArray] = {}
        self.annotated: Dict[str, Image] = {}
        self.names: Dict[str, str] = {}
        self.create_subscription(Detection2DArray, 'detections', self._store_detections, 10)
        self.create_subscription(Image, 'annotated_image', self._store_annotated, 10)
        self.create_subscription(
            LabelInfo, 'label_info', self._store_names,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def _store_detections(self, msg: Detection2DArray) -> None:
        self.detections[stamp_key(msg.header)] = msg

    def _store_annotated(self, msg: Image) -> None:
        self.annotated[stamp_key(msg.header)] = msg

    def _store_names(self, msg: LabelInfo) -> None:
        self.names = {str(entry.class_id): entry.class_name for entry in msg.class_map}


def stamp_key(header: Header) -> str:
    return f'{header.stamp.sec}.{header.stamp.nanosec:09d}'


def spin_until(node: Node, done, timeout_s: float, detector: subprocess.Popen) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if done():
            return True
        if detector.poll() is not None:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return done()


def describe(msg: Detection2DArray, names: Dict[str, str]) -> str:
    parts = []
    for detection in msg.detections:
        hypothesis = detection.results[0].hypothesis
        box = detection.bbox
        x1 = box.center.position.x - box.size_x / 2
        y1 = box.center.position.y - box.size_y / 2
        parts.append(f'{names.get(hypothesis.class_id, hypothesis.class_id)} '
                     f'{hypothesis.score:.2f} at x={x1:.0f} y={y1:.0f} '
                     f'w={box.size_x:.0f} h={box.size_y:.0f}')
    return '; '.join(parts) if parts else 'nobody'


def run(images: List[Path], output_dir: Path, timeout_s: float) -> int:
    share = Path(get_package_share_directory(PACKAGE))
    executable = Path(get_package_prefix(PACKAGE)) / 'lib' / PACKAGE / 'human_detector'
    detector = subprocess.Popen(
        [str(executable), '--ros-args', '--params-file',
         str(share / 'config' / 'human_detector.yaml')])
    rclpy.init()
    client = DemoClient()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not spin_until(client, lambda: client.image_pub.get_subscription_count() > 0,
                          timeout_s, detector):
            print('demo: the detector node did not come up', file=sys.stderr)
            return 1
        for path in images:
            frame = read_bgr(str(path))
            header = Header(stamp=client.get_clock().now().to_msg(), frame_id='demo_camera')
            key = stamp_key(header)
            client.image_pub.publish(bgr_to_image_msg(frame, header))
            if not spin_until(client, lambda: key in client.detections and key in
                              client.annotated, timeout_s, detector):
                print(f'demo: no answer for {path.name} within {timeout_s:.0f} s',
                      file=sys.stderr)
                return 1
            annotated = client.annotated[key]
            picture = output_dir / (path.stem + '.png')
            cv2.imwrite(str(picture), image_msg_to_bgr(annotated))
            print(f'{path.name}: {describe(client.detections[key], client.names)} '
                  f'-> {picture}')
        return 0
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        detector.send_signal(signal.SIGINT)
        detector.wait(timeout=30)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('images', nargs='*', type=Path,
                        help='images to run on (default: the sample images)')
    parser.add_argument('--output-dir', type=Path, default=Path('out/demo'))
    parser.add_argument('--timeout', type=float, default=60.0,
                        help='seconds to wait for the node and for each answer')
    args = parser.parse_args(argv)
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 100))
    os.environ.update(large_image_environment())
    images = args.images or [sample_image_path(name) for name in SAMPLE_IMAGES]
    return run(images, args.output_dir, args.timeout)


if __name__ == '__main__':
    sys.exit(main())
