"""The node's depth input: `depth_image` and `camera_info` in, `detections_3d` out.

Depth frames are kept for a short while by stamp; each colour frame takes the depth frame with
the nearest stamp within `depth_sync_tolerance_s` (message_filters is not installable without a
ROS distro, and one nearest-stamp lookup is all the node needs); the ROS-free FramePipeline
computes the positions (`human_detector_ros.depth`). Every colour frame without usable depth,
and every box without a valid depth, is counted for /diagnostics; nothing is guessed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields
from typing import Dict, Optional, Sequence, Tuple

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from human_detector_ros.depth import DepthFrame, DepthImage, Intrinsics, PersonPosition, \
    StampBuffer
from human_detector_ros.errors import InvalidImageError
from human_detector_ros.frame_pipeline import FrameResult
from human_detector_ros.ros.messages import detections_3d_msg

DEPTH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
DEPTH_BUFFER_FRAMES = 10
# A depth frame usually arrives within milliseconds of its colour frame, sometimes after the
# colour frame's inference ended: wait this long (wall time) for it before counting a miss.
DEPTH_WAIT_S = 0.05
STREAM_SILENT_NS = 1_000_000_000
LOG_THROTTLE_S = 5.0


@dataclass
class DepthCounts:
    """What happened to depth frames, colour frames and boxes; shown in /diagnostics."""

    depth_frames_received: int = 0
    depth_frames_invalid: int = 0
    camera_infos_received: int = 0
    camera_infos_rejected: int = 0
    frames_with_depth: int = 0
    frames_without_camera_info: int = 0
    frames_without_depth_frame: int = 0
    frames_with_other_size: int = 0
    boxes_without_depth: int = 0


_DIAGNOSTIC_KEYS = {
    'depth_frames_received': 'depth frames received',
    'depth_frames_invalid': 'depth frames dropped (invalid)',
    'camera_infos_received': 'camera_info received',
    'camera_infos_rejected': 'camera_info rejected (not calibrated)',
    'frames_with_depth': 'frames with depth',
    'frames_without_camera_info': 'frames without depth (no camera_info yet)',
    'frames_without_depth_frame': 'frames without depth (no depth frame within tolerance)',
    'frames_with_other_size': 'frames without depth (depth size differs from image)',
    'boxes_without_depth': 'boxes without valid depth',
}


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class DepthInput:
    """Subscribes `depth_image` (sensor_msgs/Image 16UC1 or 32FC1, aligned to the colour
    image) and `camera_info` (of the colour camera); publishes `detections_3d`; each topic
    name after `prefix` (e.g. 'front/' for a camera of several)."""

    def __init__(self, node: Node, tolerance_s: float, prefix: str = '') -> None:
        self.tolerance_s = tolerance_s
        self.counts = DepthCounts()
        # A camera of several logs (and throttles) under its own name, as its channel does.
        self._logger = node.get_logger().get_child(prefix.rstrip('/')) if prefix \
            else node.get_logger()
        self._ready = threading.Condition()
        self._frames: StampBuffer[DepthImage] = StampBuffer(DEPTH_BUFFER_FRAMES)
        self._newest_ns: Optional[int] = None
        self._camera: Optional[Tuple[Intrinsics, int, int]] = None
        self._node = node
        self._publisher = node.create_publisher(
            Detection3DArray, prefix + 'detections_3d', 10)
        overrides = QoSOverridingOptions.with_default_policies()
        self._depth_sub = node.create_subscription(
            Image, prefix + 'depth_image', self._on_depth, DEPTH_QOS,
            qos_overriding_options=overrides)
        self._info_sub = node.create_subscription(
            CameraInfo, prefix + 'camera_info', self._on_camera_info, DEPTH_QOS,
            qos_overriding_options=overrides)

    def destroy(self) -> None:
        """Unsubscribe and stop publishing (the node deactivates)."""
        self._node.destroy_subscription(self._depth_sub)
        self._node.destroy_subscription(self._info_sub)
        self._node.destroy_publisher(self._publisher)

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = DepthImage(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                               msg.data)
        except InvalidImageError as error:
            with self._ready:
                self.counts.depth_frames_invalid += 1
            self._logger.warning(f'invalid depth image dropped: {error}',
                                 throttle_duration_sec=LOG_THROTTLE_S)
            return
        with self._ready:
            self.counts.depth_frames_received += 1
            stamp = stamp_ns(msg.header)
            self._frames.add(stamp, depth)
            self._newest_ns = stamp if self._newest_ns is None else max(self._newest_ns, stamp)
            self._ready.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = (Intrinsics.from_k(msg.k), msg.width, msg.height)
        except ValueError as error:
            with self._ready:
                self.counts.camera_infos_received += 1
                self.counts.camera_infos_rejected += 1
            self._logger.warning(f'camera_info ignored: {error}',
                                 throttle_duration_sec=LOG_THROTTLE_S)
            return
        with self._ready:
            self.counts.camera_infos_received += 1
            self._camera = camera

    def match(self, header: Header) -> Optional[DepthFrame]:
        """The depth frame of the colour frame with `header`, with the camera's calibration,
        or None (counted) when there is none: no calibrated camera_info yet, or no depth frame
        within the tolerance. Waits up to DEPTH_WAIT_S for a depth frame still on its way."""
        stamp = stamp_ns(header)
        tolerance = int(round(self.tolerance_s * 1e9))
        with self._ready:
            depth = self._wait_for_depth(stamp, tolerance)
            if self._camera is None:
                self.counts.frames_without_camera_info += 1
                return None
            if depth is None:
                self.counts.frames_without_depth_frame += 1
                return None
            intrinsics, info_width, info_height = self._camera
        return DepthFrame(depth, intrinsics, (info_width, info_height))

    def record(self, result: FrameResult) -> None:
        """Count what became of a frame's matched depth: its positions, or why there are
        none (a depth frame or camera_info of another size than the image)."""
        if result.depth_problem is not None:
            with self._ready:
                self.counts.frames_with_other_size += 1
            self._logger.warning(
                f'{result.depth_problem}: subscribe the depth image registered (aligned) to '
                'the colour image', throttle_duration_sec=LOG_THROTTLE_S)
        elif result.positions is not None:
            with self._ready:
                self.counts.frames_with_depth += 1
                self.counts.boxes_without_depth += sum(
                    position is None for position in result.positions)

    def _wait_for_depth(self, stamp: int, tolerance: int) -> Optional[DepthImage]:
        """The buffered depth frame nearest `stamp`; while none matches and no newer frame came
        (its depth may be on the way), wait up to DEPTH_WAIT_S, unless the depth stream has
        been silent for a second of stamps. Holds `_ready`."""
        end = time.monotonic() + DEPTH_WAIT_S
        while True:
            depth = self._frames.nearest(stamp, tolerance)
            remaining = end - time.monotonic()
            newest = self._newest_ns
            waiting_is_pointless = newest is None or newest > stamp + tolerance or \
                newest < stamp - STREAM_SILENT_NS
            if depth is not None or waiting_is_pointless or remaining <= 0:
                return depth
            self._ready.wait(remaining)

    def publish(self, flat: Detection2DArray,
                positions: Sequence[Optional[PersonPosition]]) -> None:
        """Publish `detections_3d`: the Detection2Ds of `flat` that have a position."""
        self._publisher.publish(detections_3d_msg(flat, positions))

    def diagnostics(self) -> Dict[str, str]:
        """The counts as /diagnostics key/values."""
        with self._ready:
            return {_DIAGNOSTIC_KEYS[field.name]: str(getattr(self.counts, field.name))
                    for field in fields(DepthCounts)}
