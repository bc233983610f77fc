"""The README's demo: the human_detector node, in its own process, on the sample images.

This process plays camera and listener: it publishes each sample image, waits for the node's
Detection2DArray and annotated image with the same stamp, prints what was found and writes
the annotated picture to --output-dir. Then it plays an RGB-D camera: the walking sequence of
`human_detector_ros.synthetic` (two people, one hidden for a while, dropped frames) with a
synthetic depth image and CameraInfo, and prints each person's track id and 3D position.
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
from vision_msgs.msg import Detection2DArray, Detection3DArray

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from human_detector_ros.assets import SAMPLE_IMAGES, sample_image_path
from human_detector_ros.depth import Intrinsics
from human_detector_ros.image_conversion import image_msg_to_bgr, read_bgr
from human_detector_ros.ros.dds_profile import large_image_environment
from human_detector_ros.ros.detection_client import DetectionClient, stamp_key
from human_detector_ros.ros.paths import installed_config, installed_executable
from human_detector_ros.synthetic import (
    CANVAS_SHAPE, depth_metres, encode_depth, render, walking_sequence)

INTRINSICS = Intrinsics(fx=600.0, fy=600.0, cx=640.0, cy=360.0)
WALK_DEPTHS_M = {'astronaut': 2.5, 'camera': 4.0}


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


def describe_3d(msg: Detection2DArray, spatial: Optional[Detection3DArray],
                names: Dict[str, str]) -> str:
    def key(detection) -> tuple:
        hypothesis = detection.results[0].hypothesis
        return detection.id, hypothesis.class_id, hypothesis.score
    positions = {key(detection): detection.bbox.center.position
                 for detection in (spatial.detections if spatial else [])}
    parts = []
    for detection in msg.detections:
        hypothesis = detection.results[0].hypothesis
        where = positions.get(key(detection))
        at = f' at ({where.x:+.2f}, {where.y:+.2f}, {where.z:.2f}) m' if where else ''
        parts.append(f'#{detection.id or "?"} {names.get(hypothesis.class_id, "?")} '
                     f'{hypothesis.score:.2f}{at}')
    return '; '.join(parts) if parts else 'nobody'


def walk(client: DetectionClient, output_dir: Path, timeout_s: float) -> bool:
    """The walking sequence with depth; prints ids and positions, writes walk_NN.png."""
    print(f'walking sequence, depth: astronaut at {WALK_DEPTHS_M["astronaut"]} m, camera at '
          f'{WALK_DEPTHS_M["camera"]} m, wall at 12 m; frame_id camera_color_optical_frame')
    # A new scene: after more than tracking_lost_s (1 s) the node's tracker starts afresh.
    client.spin_until(lambda: False, 1.5)
    start = client.get_clock().now().nanoseconds
    for frame in walking_sequence():
        bgr, rects = render(frame.people)
        step, data = encode_depth(depth_metres(rects, WALK_DEPTHS_M), '16UC1')
        stamp = start + int(frame.stamp_s * 1e9)
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                        frame_id='camera_color_optical_frame')
        client.publish_depth(header, '16UC1', CANVAS_SHAPE[0], CANVAS_SHAPE[1], step, data,
                             INTRINSICS)
        client.spin_until(lambda: False, 0.2)  # the depth frame goes ahead of the colour one
        answer = client.detect(bgr, header.frame_id, timeout_s, with_annotated=True,
                               header=header)
        if answer is None:
            print(f'demo: no answer for frame {frame.index}', file=sys.stderr)
            return False
        key = stamp_key(header)
        client.spin_until(lambda: key in client.detections_3d, 2.0)
        picture = output_dir / f'walk_{frame.index:02d}.png'
        cv2.imwrite(str(picture), image_msg_to_bgr(client.annotated[key]))
        print(f'frame {frame.index:2d}: '
              f'{describe_3d(answer[1], client.detections_3d.get(key), client.class_names())}'
              f' -> {picture}')
    return True


def run(images: List[Path], output_dir: Path, timeout_s: float) -> int:
    detector = subprocess.Popen(
        [installed_executable('human_detector'), '--ros-args', '--params-file',
         installed_config('human_detector.yaml'), '-p', 'depth:=true'])
    rclpy.init()
    client = DetectionClient('human_detector_demo')
    client.subscribe_annotated()
    client.subscribe_3d()
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
        return 0 if walk(client, output_dir, timeout_s) else 1
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
