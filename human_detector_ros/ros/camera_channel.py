"""One camera of the `human_detector` node: its topics, depth input, tracker and health.

A node without `cameras` has one channel named '' on today's topics (`image`, `detections`,
...); with `cameras: [front, rear]` each camera has its own channel on `front/image`,
`front/detections`, ... All channels share the node's parameters and its detector: the
subscription callback hands the newest frame to the node's NewestFrames store, the node's
worker detects, and each channel tracks, locates, annotates and publishes its own frames with
their own headers.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from human_detector_ros.annotate import draw_detections, track_labels
from human_detector_ros.errors import InvalidImageError
from human_detector_ros.health import PipelineHealth
from human_detector_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from human_detector_ros.newest_frames import NewestFrames
from human_detector_ros.postprocess import Detections
from human_detector_ros.ros.dds_profile import large_image_profile, profile_variables
from human_detector_ros.ros.depth_input import DepthInput
from human_detector_ros.ros.messages import bgr_to_image_msg, detections_to_msg
from human_detector_ros.tracking import NO_ID, PersonTracker, TrackerConfig

try:
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError

# Keep only the newest frame: a deeper queue only adds latency.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
LABEL_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
LOG_THROTTLE_S = 5.0


class CameraChannel:
    """Subscribes `<camera>/image` (or its `/compressed`) into `frames`; publishes
    `<camera>/detections`, `label_info` and `annotated_image`; with `depth`, subscribes
    `<camera>/depth_image` and `camera_info` and publishes `detections_3d`. `camera` '' means
    the node's own topics. `values` is the node's parameter dict, read live; `tracker` is
    this camera's own (None when its library is missing and tracking is off)."""

    def __init__(self, node: Node, camera: str, values: Dict[str, Any],
                 tracker: Optional[PersonTracker], frames: NewestFrames) -> None:
        self.camera = camera
        self.tracker = tracker
        self._node = node
        self._values = values
        self._frames = frames
        self._lock = threading.Lock()
        self._new_tracker_config: Optional[TrackerConfig] = None
        # A logger of its own: throttling is per logger, so one camera's warnings do not
        # silence another's.
        self._logger = node.get_logger().get_child(camera) if camera else node.get_logger()
        self.health = PipelineHealth(no_image_warn_s=values['no_image_warn_s'])
        prefix = f'{camera}/' if camera else ''
        self.depth = DepthInput(node, values['depth_sync_tolerance_s'], prefix) \
            if values['depth'] else None
        self._detections_pub = node.create_publisher(Detection2DArray, prefix + 'detections', 10)
        self._annotated_pub = node.create_publisher(Image, prefix + 'annotated_image', 1)
        self._label_info_pub = node.create_publisher(
            LabelInfo, prefix + 'label_info', LABEL_INFO_QOS)
        compressed = values['input_transport'] == 'compressed'
        self._to_bgr = compressed_msg_to_bgr if compressed else image_msg_to_bgr
        topic = node.resolve_topic_name(prefix + 'image') + '/compressed' if compressed \
            else prefix + 'image'
        self.image_sub = self._subscribe_images(CompressedImage if compressed else Image, topic)

    def _subscribe_images(self, msg_type: Any, topic: str) -> Any:
        """The image subscription with the events this rclpy and RMW offer. Without `matched`
        (Humble's rclpy, or an RMW without it) the diagnostics timer polls the publisher
        count; without `message_lost` lost frames go uncounted."""
        events = {'matched': lambda info: self.health.publishers_matched(info.current_count),
                  'message_lost': lambda info: self.health.lost(info.total_count)}

        def subscribe(names: Tuple[str, ...]) -> Any:
            subscription = self._node.create_subscription(
                msg_type, topic, self._on_image, IMAGE_QOS,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=self._on_incompatible_qos,
                    **{name: events[name] for name in names}))
            self._poll_publishers = 'matched' not in names
            self.health.loss_events = 'message_lost' in names
            return subscription

        for names in (('matched', 'message_lost'), ('message_lost',), ('matched',)):
            try:
                return subscribe(names)
            except (TypeError, UnsupportedEventTypeError):
                pass
        return subscribe(())

    def _on_image(self, msg: Any) -> None:
        self.health.received()
        if self._frames.put(self.camera, msg):
            self.health.superseded()

    def reconfigure(self, tracker_config: Optional[TrackerConfig]) -> None:
        """Apply the live parameters, already changed in `values`; a `tracker_config`
        restarts the tracker with it from the next frame."""
        self.health.no_image_warn_s = self._values['no_image_warn_s']
        if self.depth is not None:
            self.depth.tolerance_s = self._values['depth_sync_tolerance_s']
        if tracker_config is not None:
            with self._lock:
                self._new_tracker_config = tracker_config

    def publish_label_info(self, msg: LabelInfo) -> None:
        self._label_info_pub.publish(msg)

    def convert(self, msg: Any) -> Optional[np.ndarray]:
        """The frame as an HxWx3 uint8 BGR array; None (counted, logged) when it is invalid."""
        try:
            return self._to_bgr(msg)
        except InvalidImageError as error:
            self.health.invalid(str(error))
            self._logger.warning(f'invalid image dropped: {error}',
                                 throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def detection_failed(self, reason: str) -> None:
        """Count and log a frame of this camera that the detector failed on."""
        self.health.failed(reason)
        self._logger.warning(f'frame dropped, inference failed: {reason}',
                             throttle_duration_sec=LOG_THROTTLE_S)

    def publish(self, msg: Any, bgr: np.ndarray, detections: Detections,
                names: Dict[int, str]) -> None:
        """Track, locate in 3D, annotate and publish one frame's `detections`, all with the
        frame's own header."""
        ids = self._track(detections, msg.header)
        flat = detections_to_msg(detections, msg.header, ids)
        self._detections_pub.publish(flat)
        positions = None
        if self.depth is not None:
            positions = self.depth.locate(msg.header, detections, bgr.shape)
            if positions is not None:
                self.depth.publish(flat, positions)
        if self._values['publish_annotated'] and self._annotated_pub.get_subscription_count():
            distances = [position and position.z for position in positions or [None] * len(ids)]
            annotated = draw_detections(bgr, detections, names, track_labels(ids, distances))
            self._annotated_pub.publish(bgr_to_image_msg(annotated, msg.header))

    def _track(self, detections: Detections, header: Header) -> List[str]:
        """Track ids as Detection2D.id strings; empty without tracking or before a track is
        confirmed. Unset stamps (0) give the tracker no time."""
        with self._lock:
            config, self._new_tracker_config = self._new_tracker_config, None
        if config is not None and self.tracker is not None:
            self.tracker.reconfigure(config)
        if not self._values['tracking'] or self.tracker is None:
            return [''] * len(detections)
        stamp_s = header.stamp.sec + header.stamp.nanosec * 1e-9
        ids = self.tracker.update(detections.boxes, detections.scores, stamp_s or None)
        return [str(track_id) if track_id != NO_ID else '' for track_id in ids.tolist()]

    def published(self, header: Header, stage_ms: Dict[str, float]) -> None:
        """Record a published frame: its stage times (ms) and its age now."""
        stamp = Time.from_msg(header.stamp)
        age_ms = None if stamp.nanoseconds == 0 else \
            (self._node.get_clock().now() - stamp).nanoseconds / 1e6
        self.health.published(stage_ms, age_ms)

    def diagnostic_status(self, engine_values: Dict[str, str], hardware_id: str
                          ) -> DiagnosticStatus:
        """This camera's status, `<node>: pipeline` (single camera) or `<node>: <camera>
        pipeline`, with `engine_values` (backend, device, engine file) appended."""
        if self._poll_publishers:
            self.health.publishers_matched(self._node.count_publishers(self.image_sub.topic_name))
        extra = dict(engine_values)
        extra['tracker restarts (time jumps)'] = \
            str(self.tracker.resets) if self.tracker else 'n/a (no tracker)'
        if self.depth is not None:
            extra.update(self.depth.diagnostics())
        report = self.health.report(extra=extra)
        name = f'{self._node.get_name()}: {self.camera + " " if self.camera else ""}pipeline'
        self._hint_at_transport_losses()
        return DiagnosticStatus(
            level=bytes([report.level]), name=name, message=report.message,
            hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()])

    def _hint_at_transport_losses(self) -> None:
        topic = self.image_sub.topic_name
        starved_s = self.health.seconds_matched_without_frame()
        loss = self.health.losing_frames()
        if starved_s is not None and starved_s > self._values['no_image_warn_s']:
            problem = (f'publisher(s) on {topic} matched {starved_s:.0f} s ago but no frame '
                       'has arrived since')
        elif loss is not None:
            problem = f'{loss[0]} of the last {loss[1]} frames on {topic} were lost in transport'
        else:
            return
        self._logger.warning(
            f'{problem}. With FastDDS defaults a best-effort subscriber (this node) loses most '
            'or all images of 640x480 or more from another process: start the camera with '
            f'{" and ".join(profile_variables())} set to {large_image_profile()}, or start '
            f'this node with -p "qos_overrides.{topic}.subscription.reliability:=reliable" '
            'for a reliable camera.', throttle_duration_sec=10.0)

    def _on_incompatible_qos(self, event: Any) -> None:
        topic = self.image_sub.topic_name
        self._logger.error(
            f'a publisher on {topic} offers QoS incompatible with this subscription '
            f'({event.last_policy_kind}); no frames will arrive from it. If the camera is best '
            'effort, keep this node best effort (the default): remove '
            f'qos_overrides.{topic}.subscription.reliability.',
            throttle_duration_sec=LOG_THROTTLE_S)
