"""Node-level benchmark: camera processes, the human_detector node, this process listening.

For each run it reports how many camera frames reached the node (from /diagnostics), the frame
age at publish (listener receive time - stamp), the node's own stage medians, and how much of
the frame time is spent outside the engine. Without --cameras it runs one camera twice:
without and with the shipped FastDDS profile on the camera. With --cameras N [N ...] it runs
once per N: N camera processes (with the profile), one node with `cameras` (N = 1: the plain
single-camera node), and reports per camera the delivered rate, frame age p50/p90 and
superseded frames, and the node's CPU time per published frame (from /proc) beside its stage
times: deserialise (measured here, in this process, on the same message), convert, engine
(preprocess + infer + postprocess) and publish (the node's medians). Usage (standalone
environment):
    AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python bench/bench_node.py --seconds 20
    AMENT_PREFIX_PATH=$PWD/.venv .venv/bin/python bench/bench_node.py --cameras 1 2 4 \\
        --width 1280 --height 720 --fps 15 --seconds 30
"""
from __future__ import annotations

import argparse
import importlib.metadata
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
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import sample_image_path
from human_detector_ros.ros.dds_profile import large_image_environment, profile_variables
from human_detector_ros.ros.messages import bgr_to_image_msg
from human_detector_ros.ros.paths import installed_config, installed_executable
from human_detector_ros.image_conversion import read_bgr

NAMESPACE = '/bench'
NODE_NAME = 'bench_detector'


def camera_names(cameras: int) -> List[str]:
    return [f'cam{index}' for index in range(cameras)]


def bench_frame(width: int, height: int) -> np.ndarray:
    return cv2.resize(read_bgr(str(sample_image_path('astronaut.png'))), (width, height))


def camera(topic: str, width: int, height: int, fps: float, seconds: float) -> int:
    """Publish a resized sample image on `topic` at `fps` for `seconds`; print how many were
    sent."""
    rclpy.init()
    node = Node('bench_camera')
    publisher = node.create_publisher(Image, topic, 1)
    frame = bench_frame(width, height)
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
    """Collects detection arrival ages per camera and the node's latest diagnostics by status
    name."""

    def __init__(self, cameras: List[str]) -> None:
        super().__init__('bench_listener')
        self.ages_ms: Dict[str, List[float]] = {camera: [] for camera in cameras}
        self.diagnostics: Dict[str, Dict[str, str]] = {}
        for camera in cameras:
            self.create_subscription(
                Detection2DArray, f'{NAMESPACE}/{camera}/detections',
                lambda msg, camera=camera: self._on_detections(camera, msg), 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_detections(self, camera: str, msg: Detection2DArray) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.ages_ms[camera].append((time.time() - stamp) * 1e3)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)


def node_command(cameras: int) -> List[str]:
    """The node as the tests start it; one camera: the plain node inside /bench/cam0, else
    `cameras` inside /bench. Either way camera i's topics are /bench/cam<i>/..."""
    command = [installed_executable('human_detector'), '--ros-args', '--params-file',
               installed_config('human_detector.yaml'), '-r', f'__node:={NODE_NAME}']
    if cameras == 1:
        return command + ['-r', f'__ns:={NAMESPACE}/cam0']
    return command + ['-r', f'__ns:={NAMESPACE}',
                      '-p', f'cameras:=[{", ".join(camera_names(cameras))}]']


def status_name(camera: str, cameras: int) -> str:
    return f'{NODE_NAME}: pipeline' if cameras == 1 else f'{NODE_NAME}: {camera} pipeline'


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/<pid>/stat)."""
    with open(f'/proc/{pid}/stat') as stat:
        fields = stat.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def deserialise_ms(width: int, height: int, repeats: int = 30) -> float:
    """Median CPU time (ms, this thread) rclpy takes to deserialise one bench frame."""
    data = serialize_message(bgr_to_image_msg(bench_frame(width, height), Header()))
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        deserialize_message(data, Image)
        times.append((time.thread_time() - start) * 1e3)
    return statistics.median(times)


def run_once(args: argparse.Namespace, with_profile: bool, cameras: int,
             listener: Listener) -> Dict:
    camera_env = dict(os.environ)
    for variable in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        camera_env.pop(variable, None)
    if with_profile:
        camera_env.update(large_image_environment(camera_env))
    names = camera_names(cameras)
    listener.diagnostics.clear()
    node = subprocess.Popen(node_command(cameras), env=dict(os.environ,
                                                            **large_image_environment()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 120.0
    while f'{NODE_NAME}: engine' not in listener.diagnostics and time.monotonic() < end:
        rclpy.spin_once(listener, timeout_sec=0.05)
    for ages in listener.ages_ms.values():
        ages.clear()
    cpu_before = cpu_seconds(node.pid)
    load_before = os.getloadavg()[0]
    camera_processes = [subprocess.Popen(
        [sys.executable, __file__, '--camera', '--topic', f'{NAMESPACE}/{name}/image',
         '--width', str(args.width), '--height', str(args.height), '--fps', str(args.fps),
         '--seconds', str(args.seconds)],
        env=camera_env, stdout=subprocess.PIPE, universal_newlines=True) for name in names]
    while any(process.poll() is None for process in camera_processes):
        rclpy.spin_once(listener, timeout_sec=0.05)
    listener.spin_for(3.0)
    cpu_s = cpu_seconds(node.pid) - cpu_before
    sent = [json.loads(process.stdout.read())['sent'] for process in camera_processes]
    node.terminate()
    node.wait(timeout=30)
    per_camera = []
    all_stages: Dict[str, List[float]] = {}
    received_all = published_all = 0
    for name, camera_sent in zip(names, sent):
        diagnostics = listener.diagnostics.get(status_name(name, cameras), {})
        stages = {key.split(' ')[0]: float(value) for key, value in diagnostics.items()
                  if key.endswith('median (ms)') and value != 'n/a' and 'age' not in key}
        for stage, value in stages.items():
            all_stages.setdefault(stage, []).append(value)
        received = int(diagnostics.get('frames received', 0))
        published = int(diagnostics.get('frames published', 0))
        received_all += received
        published_all += published
        ages = listener.ages_ms[name][1:] or [float('nan')]
        per_camera.append({
            'camera': name, 'frames sent': camera_sent, 'frames received': received,
            'delivered %': round(100.0 * received / camera_sent, 1) if camera_sent else 0.0,
            'frames published': published,
            'frames superseded': int(diagnostics.get('frames superseded by newer ones', 0)),
            'frames lost in transport': diagnostics.get('frames lost in transport'),
            'delivered rate (Hz)': round(len(listener.ages_ms[name]) / args.seconds, 2),
            'frame age p50 (ms)': round(float(np.percentile(ages, 50)), 1),
            'frame age p90 (ms)': round(float(np.percentile(ages, 90)), 1),
            'stage medians (ms)': stages})
    stages = {stage: round(statistics.mean(values), 2) for stage, values in all_stages.items()}
    outside_engine = sum(v for k, v in stages.items() if k != 'infer')
    engine = listener.diagnostics.get(f'{NODE_NAME}: engine', {})
    result = {
        'cameras': cameras, 'camera profile': with_profile,
        'load average (1 min) before': round(load_before, 2),
        'per camera': per_camera,
        'node CPU per published frame (ms)':
            round(1e3 * cpu_s / published_all, 1) if published_all else None,
        'node CPU (cores)': round(cpu_s / (args.seconds + 3.0), 2),
        'stage medians, mean over cameras (ms)': stages,
        'outside engine % of frame': round(100.0 * outside_engine / sum(stages.values()), 2)
        if stages else None,
        'frames per batch': engine.get('frames per batch, mean of last 100'),
        'engine time per batch, median (ms)': engine.get('engine time per batch, median (ms)'),
    }
    if received_all and published_all:
        result['deserialise per published frame (ms)'] = round(
            args.deserialise_ms * received_all / published_all, 1)
    return result


def versions() -> Dict[str, str]:
    found = {'python': platform.python_version()}
    for package in ('ros-rclpy', 'ros-rmw-fastrtps-cpp', 'onnxruntime', 'numpy',
                    'opencv-python-headless', 'opencv-python'):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--camera', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--topic', default=f'{NAMESPACE}/cam0/image', help=argparse.SUPPRESS)
    parser.add_argument('--cameras', type=int, nargs='+',
                        help='camera counts to run, e.g. 1 2 4 (each with the profile); '
                             'default: one camera, without and with the profile')
    parser.add_argument('--width', type=int, default=1920)
    parser.add_argument('--height', type=int, default=1080)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--seconds', type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.camera:
        return camera(args.topic, args.width, args.height, args.fps, args.seconds)
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 50 + 150))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    runs = [(1, False), (1, True)] if args.cameras is None else \
        [(cameras, True) for cameras in args.cameras]
    rclpy.init()
    args.deserialise_ms = deserialise_ms(args.width, args.height)
    listener = Listener(camera_names(max(cameras for cameras, _ in runs)))
    results = [run_once(args, with_profile, cameras, listener) for cameras, with_profile in runs]
    listener.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps({
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, '
                   f'{os.cpu_count()} cores', 'date': time.strftime('%Y-%m-%d'),
        'frame': f'{args.width}x{args.height} bgr8 at {args.fps:g} fps for {args.seconds:g} s',
        'deserialise (ms, this process)': round(args.deserialise_ms, 2),
        'versions': versions(), 'profile variables': list(profile_variables()),
        'runs': results}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
