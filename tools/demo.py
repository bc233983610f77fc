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
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import rclpy
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import SAMPLE_IMAGES, sample_image_path
from human_detector_ros.image_conversion import image_msg_to_bgr, read_bgr
from human_detector_ros.ros.dds_profile import large_image_environment
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.ros.paths import installed_config, installed_executable


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
    detector = subprocess.Popen(
        [installed_executable('human_detector'), '--ros-args', '--params-file',
         installed_config('human_detector.yaml')])
    rclpy.init()
    client = DetectionClient('human_detector_demo')
    client.subscribe_annotated()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not client.wait_for_detector(timeout_s):
            print('demo: the detector node did not come up', file=sys.stderr)
            return 1
        for path in images:
            answer = client.detect(read_bgr(str(path)), 'demo_camera', timeout_s,
                                   with_annotated=True)
            if answer is None:
                print(f'demo: no answer for {path.name} within {timeout_s:.0f} s',
                      file=sys.stderr)
                return 1
            header, detections = answer
            picture = output_dir / (path.stem + '.png')
            cv2.imwrite(str(picture), image_msg_to_bgr(client.annotated[stamp_key(header)]))
            print(f'{path.name}: {describe(detections, client.class_names())} -> {picture}')
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
