"""The `human_detector` node: camera images in, vision_msgs detections out.

A thin layer over the ROS-free core. The subscription callback only hands the newest frame to
a worker thread, which converts, detects and publishes with the input's header unchanged;
meanwhile the executor thread keeps receiving (and deserialising) the next frame, answering
parameter calls and publishing diagnostics.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from human_detector_ros.annotate import draw_detections, track_labels
from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import HumanDetectorError, InvalidImageError, InvalidParameterError
from human_detector_ros.health import PipelineHealth
from human_detector_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from human_detector_ros.ros.dds_profile import large_image_profile, profile_variables
from human_detector_ros.ros.parameters import declare_parameters, PARAMETERS_BY_NAME
from human_detector_ros.postprocess import Detections, NmsConfig
from human_detector_ros.ros.depth_input import DepthInput
from human_detector_ros.ros.log_bridge import forward_core_logs
from human_detector_ros.ros.messages import (
    bgr_to_image_msg, detections_to_msg, label_info_msg)
from human_detector_ros.tracking import (
    LIBRARY_MISSING, NO_ID, PersonTracker, TrackerConfig, TrackingUnavailableError)

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
DIAGNOSTICS_PERIOD_S = 1.0


class HumanDetectorNode(Node):
    """Subscribes `image` (or `<image>/compressed`); publishes `detections`, `label_info`,
    `annotated_image` and `/diagnostics`; with `depth`, subscribes `depth_image` and
    `camera_info` and publishes `detections_3d`."""

    def __init__(self) -> None:
        super().__init__('human_detector')
        # rclpy may destroy a node whose construction failed: everything destroy_node
        # touches exists from here on.
        self._pending: Optional[Any] = None
        self._pending_ready = threading.Condition()
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self._detector: Optional[HumanDetector] = None
        self._values = declare_parameters(self)
        forward_core_logs(self.get_logger())
        self._detector = HumanDetector(
            model_path=self._values['engine_path'] or None,
            backend=self._values['backend'], device=self._values['device'],
            tensorrt_precision=self._values['tensorrt_precision'],
            tensorrt_cache_dir=self._values['tensorrt_cache_dir'] or None,
            max_batch=self._values['max_batch'])
        self._detector.config = self._nms_config(self._values)
        self.health = PipelineHealth(no_image_warn_s=self._values['no_image_warn_s'])
        # Tracking and depth: the pipeline thread alone uses them.
        self._tracker = self._make_tracker()
        self._new_tracker_config: Optional[TrackerConfig] = None
        self._depth = DepthInput(self, self._values['depth_sync_tolerance_s']) \
            if self._values['depth'] else None

        self._detections_pub = self.create_publisher(Detection2DArray, 'detections', 10)
        self._annotated_pub = self.create_publisher(Image, 'annotated_image', 1)
        self._label_info_pub = self.create_publisher(LabelInfo, 'label_info', LABEL_INFO_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        compressed = self._values['input_transport'] == 'compressed'
        self._to_bgr = compressed_msg_to_bgr if compressed else image_msg_to_bgr
        topic = self.resolve_topic_name('image') + '/compressed' if compressed else 'image'
        self._image_sub = self._subscribe_images(CompressedImage if compressed else Image, topic)

        self._worker = threading.Thread(target=self._work, name='human_detector_pipeline',
                                        daemon=True)
        self._worker.start()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._publish_label_info()
        engine = self._detector.engine
        self.get_logger().info(
            f'{engine.backend} on {engine.device}: {engine.model_path}; '
            f'listening on {self._image_sub.topic_name}')

    def _subscribe_images(self, msg_type: Any, topic: str) -> Any:
        """The image subscription with the events this rclpy and RMW offer. Without `matched`
        (Humble's rclpy, or an RMW without it) the diagnostics timer polls the publisher
        count; without `message_lost` lost frames go uncounted."""
        events = {'matched': lambda info: self.health.publishers_matched(info.current_count),
                  'message_lost': lambda info: self.health.lost(info.total_count)}

        def subscribe(names: Tuple[str, ...]) -> Any:
            subscription = self.create_subscription(
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

    @staticmethod
    def _nms_config(values: Dict[str, Any]) -> NmsConfig:
        return NmsConfig(
            conf_threshold=values['conf_threshold'], iou_threshold=values['iou_threshold'],
            max_det=values['max_det'], classes=tuple(values['classes'] or ()) or None,
            agnostic=values['agnostic_nms'])

    def _make_tracker(self) -> Optional[PersonTracker]:
        """The tracker; None when its library is missing and `tracking` is off (it then cannot
        be switched on live)."""
        try:
            return PersonTracker(self._tracker_config(self._values))
        except TrackingUnavailableError as error:
            if self._values['tracking']:
                raise InvalidParameterError(
                    f'parameter tracking is true, but {error}; or start the node with '
                    '-p tracking:=false.') from error
            return None

    @staticmethod
    def _tracker_config(values: Dict[str, Any]) -> TrackerConfig:
        return TrackerConfig(track_threshold=values['tracking_threshold'],
                             min_iou=values['tracking_min_iou'],
                             lost_track_s=values['tracking_lost_s'])

    def class_names(self) -> Dict[int, str]:
        """`class_names` when set, else the names stored in the model."""
        names = self._values['class_names']
        return dict(enumerate(names)) if names else dict(self._detector.names)

    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._label_info_pub.publish(
            label_info_msg(self.class_names(), self._values['conf_threshold'], header))

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue
            problem = spec.problem(parameter.value)
            if problem:
                return SetParametersResult(successful=False,
                                           reason=f'{parameter.name}: {problem}')
            value = spec.value_of(parameter.value)
            if parameter.name == 'tracking' and value and self._tracker is None:
                return SetParametersResult(successful=False, reason=f'tracking: {LIBRARY_MISSING}')
            updates[parameter.name] = value
        if updates:
            self._values.update(updates)
            self._detector.config = self._nms_config(self._values)
            self.health.no_image_warn_s = self._values['no_image_warn_s']
            if {'class_names', 'conf_threshold'} & set(updates):
                self._publish_label_info()
            if {'tracking', 'tracking_threshold', 'tracking_min_iou',
                    'tracking_lost_s'} & set(updates):
                with self._pending_ready:
                    self._new_tracker_config = self._tracker_config(self._values)
            if self._depth is not None:
                self._depth.tolerance_s = self._values['depth_sync_tolerance_s']
        return SetParametersResult(successful=True)

    def _on_image(self, msg: Any) -> None:
        self.health.received()
        with self._pending_ready:
            if self._pending is not None:
                self.health.superseded()
            self._pending = msg
            self._pending_ready.notify()

    def _work(self) -> None:
        while True:
            with self._pending_ready:
                while self._pending is None and not self._stopping:
                    self._pending_ready.wait()
                if self._stopping:
                    return
                msg, self._pending = self._pending, None
            try:
                self._process(msg)
            except Exception as error:  # the pipeline thread must outlive any one frame
                self.health.failed(f'{type(error).__name__}: {error}')
                self.get_logger().error(f'frame dropped, unexpected {type(error).__name__}: '
                                        f'{error}', throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, msg: Any) -> None:
        start = time.perf_counter()
        try:
            bgr = self._to_bgr(msg)
        except InvalidImageError as error:
            self.health.invalid(str(error))
            self.get_logger().warning(f'invalid image dropped: {error}',
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        converted = time.perf_counter()
        try:
            detections = self._detector(bgr)
        except HumanDetectorError as error:
            self.health.failed(str(error))
            self.get_logger().warning(f'frame dropped, inference failed: {error}',
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        detected = time.perf_counter()
        ids = self._track(detections, msg.header)
        flat = detections_to_msg(detections, msg.header, ids)
        self._detections_pub.publish(flat)
        positions = None
        if self._depth is not None:
            positions = self._depth.locate(msg.header, detections, bgr.shape)
            if positions is not None:
                self._depth.publish(flat, positions)
        if self._values['publish_annotated'] and self._annotated_pub.get_subscription_count():
            distances = [position and position.z for position in positions or [None] * len(ids)]
            annotated = draw_detections(bgr, detections, self.class_names(),
                                        track_labels(ids, distances))
            self._annotated_pub.publish(bgr_to_image_msg(annotated, msg.header))
        published = time.perf_counter()
        timings = self._detector.last_timings
        self.health.published(
            {'convert': (converted - start) * 1e3, 'preprocess': timings.preprocess_ms,
             'infer': timings.infer_ms, 'postprocess': timings.postprocess_ms,
             'publish': (published - detected) * 1e3}, self._age_ms(msg.header))

    def _track(self, detections: Detections, header: Header) -> List[str]:
        """Track ids as Detection2D.id strings; empty without tracking or before a track is
        confirmed. Unset stamps (0) give the tracker no time."""
        with self._pending_ready:
            config, self._new_tracker_config = self._new_tracker_config, None
        if config is not None and self._tracker is not None:
            self._tracker.reconfigure(config)
        if not self._values['tracking'] or self._tracker is None:
            return [''] * len(detections)
        stamp_s = header.stamp.sec + header.stamp.nanosec * 1e-9
        ids = self._tracker.update(detections.boxes, detections.scores, stamp_s or None)
        return [str(track_id) if track_id != NO_ID else '' for track_id in ids.tolist()]

    def _age_ms(self, header: Header) -> Optional[float]:
        """now - stamp on the node's clock (sim time when replaying); None for unset stamps."""
        stamp = Time.from_msg(header.stamp)
        if stamp.nanoseconds == 0:
            return None
        return (self.get_clock().now() - stamp).nanoseconds / 1e6

    def _publish_diagnostics(self) -> None:
        if self._poll_publishers:
            self.health.publishers_matched(self.count_publishers(self._image_sub.topic_name))
        engine = self._detector.engine
        extra = {'backend': engine.backend, 'device': engine.device,
                 'engine': str(engine.model_path),
                 'tracker restarts (time jumps)':
                     str(self._tracker.resets) if self._tracker else 'n/a (no tracker)'}
        if self._depth is not None:
            extra.update(self._depth.diagnostics())
        report = self.health.report(extra=extra)
        status = DiagnosticStatus(
            level=bytes([report.level]), name=f'{self.get_name()}: pipeline',
            message=report.message, hardware_id=f'{engine.backend} {engine.device}',
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()])
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))
        self._hint_at_transport_losses()

    def _hint_at_transport_losses(self) -> None:
        topic = self._image_sub.topic_name
        starved_s = self.health.seconds_matched_without_frame()
        loss = self.health.losing_frames()
        if starved_s is not None and starved_s > self._values['no_image_warn_s']:
            problem = (f'publisher(s) on {topic} matched {starved_s:.0f} s ago but no frame '
                       'has arrived since')
        elif loss is not None:
            problem = f'{loss[0]} of the last {loss[1]} frames on {topic} were lost in transport'
        else:
            return
        self.get_logger().warning(
            f'{problem}. With FastDDS defaults a best-effort subscriber (this node) loses most '
            'or all images of 640x480 or more from another process: start the camera with '
            f'{" and ".join(profile_variables())} set to {large_image_profile()}, or start '
            f'this node with -p "qos_overrides.{topic}.subscription.reliability:=reliable" '
            'for a reliable camera.', throttle_duration_sec=10.0)

    def _on_incompatible_qos(self, event: Any) -> None:
        self.get_logger().error(
            f'a publisher on {self._image_sub.topic_name} offers QoS incompatible with this '
            f'subscription ({event.last_policy_kind}); no frames will arrive from it. If the '
            'camera is best effort, keep this node best effort (the default): remove '
            f'qos_overrides.{self._image_sub.topic_name}.subscription.reliability.',
            throttle_duration_sec=LOG_THROTTLE_S)

    def destroy_node(self) -> None:
        """Stop the pipeline thread, then destroy the node."""
        with self._pending_ready:
            self._stopping = True
            self._pending_ready.notify()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        if self._worker is not None and self._worker.is_alive():
            self.get_logger().error('the pipeline thread is still busy; leaving the engine '
                                    'open rather than freeing it under a running frame')
        elif self._detector is not None:
            self._detector.close()
        super().destroy_node()
