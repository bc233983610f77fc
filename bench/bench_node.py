"""Node-level benchmark: a 30 fps camera process, the human_detector node, this process listening.

For each run it reports how many camera frames reached the node (from /diagnostics), the frame
age at publish (listener receive time - stamp), the node's own stage medians, and how much of
the frame time is spent outside the engine. Runs twice: camera without and with the shipped
FastDDS profile. Usage (standalone environment):
    AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python bench/bench_node.py --seconds 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.ros.dds_profile import large_image_environment, profile_variables
from human_detector_ros.ros.messages import bgr_to_image_msg
from human_detector_ros.ros.paths import installed_config, installed_executable
from human_detector_ros.image_conversion import read_bgr

TOPIC = '/bench/image'


def camera(width: int, height: int, fps: float, seconds: float) -> int:
    """Publish a resized sample image at `fps` for `seconds`; print how many were sent."""
    rclpy.init()
    node = Node('bench_camera')
    publisher = node.create_publisher(Image, TOPIC, 1)
    frame = cv2.resize(read_bgr(str(sample_image_path('astronaut.png'))), (width, height))
    end = time.monotonic() + 3.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id='bench_camera')
        publisher.publish(bgr_to_image_msg(frame, header))
        sent += 1
        time.sleep(max(0.0, start + sent / fps - time.monotonic()))
    print(json.dumps({'sent': sent}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


class Listener(Node):
    """Collects detection arrival times and the node's latest diagnostics."""

    def __init__(self) -> None:
        super().__init__('bench_listener')
        self.ages_ms: List[float] = []
        self.diagnostics: Dict[str, str] = {}
        self.create_subscription(Detection2DArray, '/bench/detections', self._on_detections, 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_detections(self, msg: Detection2DArray) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.ages_ms.append((time.time() - stamp) * 1e3)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith('bench_detector'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}


def run_once(args: argparse.Namespace, with_profile: bool, listener: Listener) -> Dict:
    camera_env = dict(os.environ)
    for variable in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        camera_env.pop(variable, None)
    if with_profile:
        camera_env.update(large_image_environment(camera_env))
    node = subprocess.Popen(
        [installed_executable('human_detector'), '--ros-args', '--params-file',
         installed_config('human_detector.yaml'), '-r', '__node:=bench_detector',
         '-r', f'image:={TOPIC}', '-r', 'detections:=/bench/detections'],
        env=dict(os.environ, **large_image_environment()),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)
    listener.ages_ms.clear()
    camera_process = subprocess.Popen(
        [sys.executable, __file__, '--camera', '--width', str(args.width), '--height',
         str(args.height), '--fps', str(args.fps), '--seconds', str(args.seconds)],
        env=camera_env, stdout=subprocess.PIPE, universal_newlines=True)
    while camera_process.poll() is None:
        rclpy.spin_once(listener, timeout_sec=0.05)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        rclpy.spin_once(listener, timeout_sec=0.05)
    sent = json.loads(camera_process.stdout.read())['sent']
    node.terminate()
    node.wait(timeout=30)
    diagnostics = dict(listener.diagnostics)
    stages = {key.split(' ')[0]: float(value) for key, value in diagnostics.items()
              if key.endswith('median (ms)') and value != 'n/a' and 'age' not in key}
    received = int(diagnostics.get('frames received', 0))
    ages = listener.ages_ms[5:] or [float('nan')]
    outside_engine = sum(v for k, v in stages.items() if k != 'infer')
    return {
        'camera profile': with_profile, 'frames sent': sent, 'frames received': received,
        'delivered %': round(100.0 * received / sent, 1) if sent else 0.0,
        'frames published': int(diagnostics.get('frames published', 0)),
        'frame age median (ms)': round(statistics.median(ages), 1),
        'frame age p90 (ms)': round(float(np.percentile(ages, 90)), 1),
        'stage medians (ms)': stages,
        'outside engine % of frame': round(100.0 * outside_engine / sum(stages.values()), 2)
        if stages else None,
        'age / infer': round(statistics.median(ages) / stages['infer'], 2)
        if stages.get('infer') else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--camera', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--width', type=int, default=1920)
    parser.add_argument('--height', type=int, default=1080)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--seconds', type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.camera:
        return camera(args.width, args.height, args.fps, args.seconds)
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 50 + 150))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init()
    listener = Listener()
    results = [run_once(args, with_profile, listener) for with_profile in (False, True)]
    listener.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps({
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, '
                   f'{os.cpu_count()} cores', 'date': time.strftime('%Y-%m-%d'),
        'frame': f'{args.width}x{args.height} bgr8 at {args.fps:g} fps for {args.seconds:g} s',
        'profile variables': list(profile_variables()), 'runs': results}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
