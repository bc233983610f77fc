"""Does Fast DDS report the frames a best-effort reader loses? A camera process without the
large-image profile (with it: --profile) publishes N bgr8 frames at 10 Hz, best effort, from a
plain loop; this
process subscribes best effort, keep last 1 (as the node does) and counts the frames received
and the subscription's message-lost events (total_count). Uses rclpy and sensor_msgs only, so
it runs in any ROS 2 environment (Kilted's and Jazzy's venvs alike). Usage:
    AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python bench/bench_message_lost.py [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

TOPIC = '/bench_lost/image'
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'config',
                       'fastdds_large_images.xml')


def camera(width: int, height: int, frames: int) -> int:
    """Wait for a subscriber, publish `frames` frames at 10 Hz, print how many were sent."""
    rclpy.init()
    node = rclpy.create_node('bench_lost_camera')
    publisher = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    while publisher.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(1.0)
    data = bytes(width * height * 3)
    for _ in range(frames):
        publisher.publish(Image(header=Header(stamp=node.get_clock().now().to_msg()),
                                height=height, width=width, encoding='bgr8', step=width * 3,
                                data=data))
        time.sleep(0.1)
    print(json.dumps({'sent': frames}), flush=True)
    time.sleep(1.0)
    rclpy.try_shutdown()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--camera', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--height', type=int, default=720)
    parser.add_argument('--frames', type=int, default=72)
    parser.add_argument('--profile', action='store_true',
                        help='start the camera with config/fastdds_large_images.xml')
    args = parser.parse_args(argv)
    if args.camera:
        return camera(args.width, args.height, args.frames)
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 50 + 150))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init()
    node = rclpy.create_node('bench_lost_listener')
    counts: Dict[str, int] = {'received': 0, 'lost (message-lost total_count)': 0}

    def on_lost(info) -> None:
        counts['lost (message-lost total_count)'] = info.total_count

    def on_image(_msg: Image) -> None:
        counts['received'] += 1

    node.create_subscription(
        Image, TOPIC, on_image,
        QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                   reliability=ReliabilityPolicy.BEST_EFFORT),
        event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    camera_env = {name: value for name, value in os.environ.items()
                  if name not in PROFILE_VARIABLES}
    if args.profile:  # both names: whichever Fast DDS generation this is reads one
        camera_env.update({name: PROFILE for name in PROFILE_VARIABLES})
    process = subprocess.Popen(
        [sys.executable, __file__, '--camera', '--width', str(args.width), '--height',
         str(args.height), '--frames', str(args.frames)],
        env=camera_env, stdout=subprocess.PIPE, universal_newlines=True)
    while process.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = json.loads(process.stdout.read())['sent']
    node.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps({'frame': f'{args.width}x{args.height} bgr8, 10 Hz',
                      'camera profile': args.profile,
                      'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                      'rclpy': _version('rclpy'), 'fast dds library': _fast_dds_library(),
                      'sent': sent, **counts}, indent=2))
    return 0


def _version(package: str) -> str:
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:  # metadata is missing in some installs: the figure is only a label
        return 'unknown'


def _fast_dds_library() -> str:
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        library = os.path.join(prefix, 'lib')
        if os.path.isdir(library):
            found = sorted(name for name in os.listdir(library)
                           if name.startswith(('libfastdds.so.', 'libfastrtps.so.')))
            if found:
                return found[-1]
    return 'not found'


if __name__ == '__main__':
    sys.exit(main())
