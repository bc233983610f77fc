"""One camera of the `human_detector` node: its topics, depth input and health.

A node without `cameras` has one channel named '' on the node's own topics (`image`,
`detections`, ...); with `cameras: [front, rear]` each camera has its own channel on
`front/image`, `front/detections`, ... All channels share the node's parameters and its
FramePipeline (which keeps one tracker per camera name): the subscription callback hands the
newest frame to the node's NewestFrames store, the node's worker runs the newest frame of every
camera through the pipeline as one batch, and each channel publishes its own frame's results
with the frame's own header. Publishers are made at configure (lifecycle publishers), the
subscriptions and the depth input at activate.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional, Tuple

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

from human_detector_ros.errors import InvalidImageError
from human_detector_ros.frame_pipeline import CameraFrame, FrameResult
from human_detector_ros.health import PipelineHealth
from human_detector_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from human_detector_ros.newest_frames import NewestFrames
from human_detector_ros.ros.dds_profile import large_image_profile, profile_variables
from human_detector_ros.ros.depth_input import DepthInput
from human_detector_ros.ros.messages import bgr_to_image_msg, detections_to_msg
from human_detector_ros.tracking import NO_ID

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

Publisher = Callable[[Any, str, Any], Any]
"""(message type, topic, QoS) -> a lifecycle publisher, disabled until the node activates."""


class CameraChannel:
    """Subscribes `<camera>/image` (or its `/compressed`) into the node's NewestFrames;
    publishes `<camera>/detections`, `label_info` and `annotated_image`; with `depth`,
    subscribes `<camera>/depth_image` and `camera_info` and publishes `detections_3d`.
    `camera` '' means the node's own topics. `values` is the node's parameter dict, read live;
    `publisher` makes the node's lifecycle publishers (the node destroys them at cleanup)."""

    def __init__(self, node: Node, camera: str, values: Dict[str, Any],
                 publisher: Publisher) -> None:
        self.camera = camera
        self._node = node
        self._values = values
        self._frames: Optional[NewestFrames] = None
        # A logger of its own: throttling is per logger, so one camera's warnings do not
        # silence another's.
        self._logger = node.get_logger().get_child(camera) if camera else node.get_logger()
        self.health = PipelineHealth(no_image_warn_s=values['no_image_warn_s'])
        self._prefix = f'{camera}/' if camera else ''
        self.depth: Optional[DepthInput] = None
        self.image_sub: Optional[Any] = None
        self._poll_publishers = False
        self._detections_pub = publisher(Detection2DArray, self._prefix + 'detections', 10)
        self._annotated_pub = publisher(Image, self._prefix + 'annotated_image', 1)
        self._label_info_pub = publisher(LabelInfo, self._prefix + 'label_info', LABEL_INFO_QOS)
        self._to_bgr = compressed_msg_to_bgr if values['input_transport'] == 'compressed' \
            else image_msg_to_bgr

    def activate(self, frames: NewestFrames) -> None:
        """Subscribe the images into `frames` and, with `depth`, the depth input."""
        self._frames = frames
        prefix = self._prefix
        compressed = self._values['input_transport'] == 'compressed'
        topic = self._node.resolve_topic_name(prefix + 'image') + '/compressed' if compressed \
            else prefix + 'image'
        self.image_sub = self._subscribe_images(CompressedImage if compressed else Image, topic)
        self.depth = DepthInput(self._node, self._values['depth_sync_tolerance_s'], prefix) \
            if self._values['depth'] else None

    def deactivate(self) -> None:
        """Unsubscribe everything `activate` subscribed (the node's worker has stopped)."""
        if self.image_sub is not None:
            self._node.destroy_subscription(self.image_sub)
            self.image_sub = None
        if self.depth is not None:
            self.depth.destroy()
            self.depth = None

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
        if self._frames is not None and self._frames.put(self.camera, msg):
            self.health.superseded()

    def reconfigure(self) -> None:
        """Apply the live parameters, already changed in `values`."""
        self.health.no_image_warn_s = self._values['no_image_warn_s']
        if self.depth is not None:
            self.depth.tolerance_s = self._values['depth_sync_tolerance_s']

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

    def camera_frame(self, header: Header, bgr: np.ndarray) -> CameraFrame:
        """The pipeline's input for one converted frame: this camera's name, the stamp for its
        tracker (unset stamps, 0, give it no time), its depth (matched once detected) and
        whether anybody looks at the annotated image."""
        stamp_s = header.stamp.sec + header.stamp.nanosec * 1e-9
        return CameraFrame(
            self.camera, bgr, stamp_s or None,
            depth=None if self.depth is None else functools.partial(self.depth.match, header),
            annotate=bool(self._values['publish_annotated'] and
                          self._annotated_pub.get_subscription_count()))

    def detection_failed(self, reason: str) -> None:
        """Count and log a frame of this camera that the detector failed on."""
        self.health.failed(reason)
        self._logger.warning(f'frame dropped, inference failed: {reason}',
                             throttle_duration_sec=LOG_THROTTLE_S)

    def unexpected(self, error: Exception) -> None:
        """Count and log a frame of this camera dropped by an unexpected error."""
        self.health.failed(f'{type(error).__name__}: {error}')
        self._logger.error(f'frame dropped, unexpected {type(error).__name__}: {error}',
                           throttle_duration_sec=LOG_THROTTLE_S)

    def publish_detections(self, header: Header, result: FrameResult
                           ) -> Tuple[Detection2DArray, float]:
        """Publish `detections` as soon as the pipeline has them (before the depth wait and
        drawing); return the message and the seconds publishing took."""
        started = time.perf_counter()
        ids = [''] * len(result.detections) if result.track_ids is None else [
            str(track_id) if track_id != NO_ID else '' for track_id in result.track_ids.tolist()]
        flat = detections_to_msg(result.detections, header, ids)
        self._detections_pub.publish(flat)
        return flat, time.perf_counter() - started

    def publish_rest(self, header: Header, result: FrameResult, flat: Detection2DArray
                     ) -> None:
        """Publish what follows the detections: `detections_3d` and `annotated_image`."""
        if self.depth is not None:
            self.depth.record(result)
            if result.positions is not None:
                self.depth.publish(flat, result.positions)
        if result.annotated is not None:
            self._annotated_pub.publish(bgr_to_image_msg(result.annotated, header))

    def published(self, header: Header, stage_ms: Dict[str, float]) -> None:
        """Record a published frame: its stage times (ms) and its age now (on the node's
        clock, sim time when replaying; none for unset stamps)."""
        stamp = Time.from_msg(header.stamp)
        age_ms = None if stamp.nanoseconds == 0 else \
            (self._node.get_clock().now() - stamp).nanoseconds / 1e6
        self.health.published(stage_ms, age_ms)

    def diagnostic_status(self, engine_values: Dict[str, str], hardware_id: str,
                          tracker_resets: Optional[int]) -> DiagnosticStatus:
        """This camera's status, `<node>: pipeline` (single camera) or `<node>: <camera>
        pipeline`, with `engine_values` (backend, device, engine file) and how often a time
        jump restarted this camera's tracker (None: no tracker) appended."""
        if self._poll_publishers:
            self.health.publishers_matched(self._node.count_publishers(self.image_sub.topic_name))
        extra = dict(engine_values)
        extra['tracker restarts (time jumps)'] = \
            str(tracker_resets) if tracker_resets is not None else 'n/a (no tracker)'
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
