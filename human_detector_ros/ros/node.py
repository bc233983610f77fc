"""The `human_detector` node: camera images in, vision_msgs detections out.

A thin layer over the ROS-free core. The subscription callback only hands the newest frame to
a worker thread, which converts it, runs it through the core's FramePipeline (detect, track,
locate in 3D, annotate) and publishes the results with the input's header unchanged;
meanwhile the executor thread keeps receiving (and deserialising) the next frame, answering
parameter calls and publishing diagnostics.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleState, Node as LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import HumanDetectorError, InvalidImageError, InvalidParameterError
from human_detector_ros.frame_pipeline import CameraFrame, FramePipeline, FrameResult
from human_detector_ros.health import PipelineHealth
from human_detector_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from human_detector_ros.ros.dds_profile import large_image_profile, profile_variables
from human_detector_ros.ros.parameters import declare_parameters, PARAMETERS_BY_NAME
from human_detector_ros.postprocess import NmsConfig
from human_detector_ros.ros.depth_input import DepthInput
from human_detector_ros.ros.log_bridge import forward_core_logs
from human_detector_ros.ros.messages import (
    bgr_to_image_msg, detections_to_msg, label_info_msg)
from human_detector_ros.tracking import (
    LIBRARY_MISSING, NO_ID, TrackerConfig, TrackingUnavailableError)

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
BOND_HEARTBEAT_TIMEOUT_S = 4.0


class HumanDetectorNode(LifecycleNode):
    """Subscribes `image` (or `<image>/compressed`); publishes `detections`, `label_info`,
    `annotated_image` and `/diagnostics`; with `depth`, subscribes `depth_image` and
    `camera_info` and publishes `detections_3d`.

    A lifecycle node: `on_configure` loads the engine, `on_activate` subscribes and publishes,
    `on_deactivate` stops taking frames (the engine stays loaded), `on_cleanup` and
    `on_shutdown` free what configure made. This class is the plain node: it configures and
    activates itself while it is built, raises HumanDetectorError (or rclpy's errors) when it
    cannot, and offers no lifecycle services. ManagedHumanDetectorNode waits for the
    lifecycle services (`ros2 lifecycle set`, Nav2's lifecycle manager) instead.
    """

    managed = False

    def __init__(self) -> None:
        super().__init__('human_detector', enable_communication_interface=self.managed)
        # rclpy may destroy a node whose construction failed: everything destroy_node
        # touches exists from here on.
        self._pending: Optional[Any] = None
        self._pending_ready = threading.Condition()
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self._detector: Optional[HumanDetector] = None
        self._pipeline: Optional[FramePipeline] = None
        self._depth: Optional[DepthInput] = None
        self._image_sub: Optional[Any] = None
        self._diagnostics_timer: Optional[Any] = None
        self._bond: Optional[Any] = None
        self._lifecycle_publishers: List[Any] = []
        self._failure: Optional[Exception] = None
        self._values = declare_parameters(self, self.managed)
        forward_core_logs(self.get_logger())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if not self.managed:
            for transition in (self.trigger_configure, self.trigger_activate):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    raise self._failure
            return
        self._refuse_unavailable_transitions()
        if self._values['autostart_node'] and \
                self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _refuse_unavailable_transitions(self) -> None:
        """A ChangeState request for a transition the current state does not offer (by id)
        is refused, as Kilted's rclpy refuses it; Humble's and Jazzy's raise from the service
        callback, which would end the process."""
        service = getattr(self, '_service_change_state', None)  # rclpy's, not public API
        if service is None:
            return
        change_state = service.callback

        def guarded(request: Any, response: Any) -> Any:
            try:
                return change_state(request, response)
            except Exception as error:  # rclpy's RCLError, not importable by a public name
                self.get_logger().error(
                    f'transition {request.transition.id} {request.transition.label!r} '
                    f'refused: {error}'.replace('\n', ' '))
                response.success = False
                return response
        service.callback = guarded

    def _transition(self, step: Callable[[], None], name: str) -> TransitionCallbackReturn:
        """Run a transition's `step`; an error fails the transition with one message (for a
        setup error, ours or rclpy's for a value it rejects such as a QoS override, the
        message says what and how to fix it) and the node stays up. rclpy itself would turn
        the exception into a silent ERROR."""
        try:
            step()
        except Exception as error:  # the plain node re-raises it; see __init__
            self._failure = error
            if self.managed:
                setup = isinstance(error, (HumanDetectorError, ParameterException, RuntimeError))
                self.get_logger().error(
                    f'{name} failed: {error}' if setup else
                    f'{name} failed, unexpected {type(error).__name__}: {error}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters and load (or build) the engine; publishers are made here
        and stay disabled until activate. On failure nothing stays allocated."""
        result = self._transition(self._configure, 'configure')
        if result != TransitionCallbackReturn.SUCCESS:
            self._free()
        return result

    def _configure(self) -> None:
        self._detector = HumanDetector(
            model_path=self._values['engine_path'] or None,
            backend=self._values['backend'], device=self._values['device'],
            tensorrt_precision=self._values['tensorrt_precision'],
            tensorrt_cache_dir=self._values['tensorrt_cache_dir'] or None,
            max_batch=self._values['max_batch'])
        self._detector.config = self._nms_config(self._values)
        self.health = PipelineHealth(no_image_warn_s=self._values['no_image_warn_s'])
        self._pipeline = self._make_pipeline()
        self._detections_pub = self._publisher(Detection2DArray, 'detections', 10)
        self._annotated_pub = self._publisher(Image, 'annotated_image', 1)
        self._label_info_pub = self._publisher(LabelInfo, 'label_info', LABEL_INFO_QOS)
        self._diagnostics_pub = self._publisher(DiagnosticArray, '/diagnostics', 10)
        engine = self._detector.engine
        self.get_logger().info(f'{engine.backend} on {engine.device}: {engine.model_path}')

    def _publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._lifecycle_publishers.append(publisher)
        return publisher

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, subscribe and start the pipeline thread."""
        result = self._transition(self._activate, 'activate')
        if result != TransitionCallbackReturn.SUCCESS:
            self._stop_taking_frames()
            return result
        result = super().on_activate(state)
        self._publish_label_info()
        return result

    def _activate(self) -> None:
        compressed = self._values['input_transport'] == 'compressed'
        self._to_bgr = compressed_msg_to_bgr if compressed else image_msg_to_bgr
        topic = self.resolve_topic_name('image') + '/compressed' if compressed else 'image'
        self._image_sub = self._subscribe_images(CompressedImage if compressed else Image, topic)
        self._depth = DepthInput(self, self._values['depth_sync_tolerance_s']) \
            if self._values['depth'] else None
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name='human_detector_pipeline',
                                        daemon=True)
        self._worker.start()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        self._bond = make_bond(self, self._values.get('bond_heartbeat_period', 0.0))
        self.get_logger().info(f'listening on {self._image_sub.topic_name}')

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; a frame in work finishes first. The engine stays loaded."""
        self._stop_taking_frames()
        return super().on_deactivate(state)

    def _stop_taking_frames(self) -> None:
        if self._bond is not None:
            self._bond.break_bond()
            self._bond = None
        for entity, destroy in ((self._diagnostics_timer, self.destroy_timer),
                                (self._image_sub, self.destroy_subscription)):
            if entity is not None:
                destroy(entity)
        self._diagnostics_timer = self._image_sub = None
        self._stop_worker()
        if self._depth is not None:
            self._depth.destroy()
            self._depth = None

    def _stop_worker(self) -> bool:
        """Stop the pipeline thread; False if it is still busy after 10 s."""
        with self._pending_ready:
            self._stopping = True
            self._pending = None
            self._pending_ready.notify()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            if self._worker.is_alive():
                self.get_logger().error('the pipeline thread is still busy; leaving the '
                                        'engine open rather than freeing it under a running '
                                        'frame')
                return False
            self._worker = None
        return True

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the engine and everything configure made."""
        self._free()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From unconfigured, inactive or active: stop and free everything."""
        self._stop_taking_frames()
        self._free()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An unexpected error in a transition: free everything, back to unconfigured."""
        self._stop_taking_frames()
        self._free()
        return super().on_error(state)

    def _free(self) -> None:
        for publisher in self._lifecycle_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._lifecycle_publishers = []
        self._pipeline = None
        if self._worker is None and self._detector is not None:
            self._detector.close()
        self._detector = None

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

    def _make_pipeline(self) -> FramePipeline:
        """The frame pipeline; without the tracking library only with `tracking` off (it then
        cannot be switched on live)."""
        try:
            return FramePipeline(self._detector, tracking=self._values['tracking'],
                                 tracker_config=self._tracker_config(self._values),
                                 names=self.class_names())
        except TrackingUnavailableError as error:
            raise InvalidParameterError(
                f'parameter tracking is true, but {error}; or start the node with '
                '-p tracking:=false.') from error

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
        configured = self._detector is not None
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue
            problem = spec.problem(parameter.value)
            if problem:
                return SetParametersResult(successful=False,
                                           reason=f'{parameter.name}: {problem}')
            if spec.read_only and configured:
                # Only reachable in the managed node: the plain one declares these read-only.
                return SetParametersResult(
                    successful=False,
                    reason=f'{parameter.name} is read at configure: set it while the node is '
                           f'unconfigured (ros2 lifecycle set {self.get_fully_qualified_name()} '
                           'cleanup), then configure')
            value = spec.value_of(parameter.value)
            if parameter.name == 'tracking' and value and LIBRARY_MISSING:
                return SetParametersResult(successful=False, reason=f'tracking: {LIBRARY_MISSING}')
            updates[parameter.name] = value
        self._values.update(updates)
        if updates and configured:
            self._pipeline.reconfigure(nms=self._nms_config(self._values))
            self.health.no_image_warn_s = self._values['no_image_warn_s']
            if {'class_names', 'conf_threshold'} & set(updates):
                self._publish_label_info()
            if 'class_names' in updates:
                self._pipeline.reconfigure(names=self.class_names())
            if {'tracking', 'tracking_threshold', 'tracking_min_iou',
                    'tracking_lost_s'} & set(updates):
                self._pipeline.reconfigure(tracking=self._values['tracking'],
                                           tracker_config=self._tracker_config(self._values))
        if updates and self._depth is not None:
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
        header = msg.header
        # Unset stamps (0) give the tracker no time.
        stamp_s = header.stamp.sec + header.stamp.nanosec * 1e-9
        frame = CameraFrame(
            '', bgr, stamp_s or None,
            depth=None if self._depth is None else functools.partial(self._depth.match, header),
            annotate=bool(self._values['publish_annotated'] and
                          self._annotated_pub.get_subscription_count()))
        detections_out: List[Any] = []
        try:
            result = self._pipeline.process(frame, functools.partial(
                self._publish_detections, header, detections_out))
        except HumanDetectorError as error:
            self.health.failed(str(error))
            self.get_logger().warning(f'frame dropped, inference failed: {error}',
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        processed = time.perf_counter()
        flat, publish_s = detections_out
        if self._depth is not None:
            self._depth.record(result)
            if result.positions is not None:
                self._depth.publish(flat, result.positions)
        if result.annotated is not None:
            self._annotated_pub.publish(bgr_to_image_msg(result.annotated, header))
        published = time.perf_counter()
        self.health.published(
            {'convert': (converted - start) * 1e3, **result.timings_ms,
             'publish': (publish_s + published - processed) * 1e3}, self._age_ms(header))

    def _publish_detections(self, header: Header, out: List[Any], result: FrameResult) -> None:
        """Publish `detections` as soon as the pipeline has them (before the depth wait and
        drawing); append the message and the seconds publishing took to `out`."""
        started = time.perf_counter()
        ids = [''] * len(result.detections) if result.track_ids is None else [
            str(track_id) if track_id != NO_ID else '' for track_id in result.track_ids.tolist()]
        flat = detections_to_msg(result.detections, header, ids)
        self._detections_pub.publish(flat)
        out.extend((flat, time.perf_counter() - started))

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
        resets = self._pipeline.tracker_resets()
        extra = {'backend': engine.backend, 'device': engine.device,
                 'engine': str(engine.model_path),
                 'tracker restarts (time jumps)': str(resets) if resets is not None
                 else 'n/a (no tracker)'}
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
        """Stop the pipeline thread and free the engine, then destroy the node."""
        self._stop_taking_frames()
        self._free()
        super().destroy_node()


class ManagedHumanDetectorNode(HumanDetectorNode):
    """The node as a managed lifecycle node: built unconfigured (or, with `autostart_node`,
    configured and activated at start), driven by the lifecycle_msgs services."""

    managed = True


def make_bond(node: LifecycleNode, heartbeat_period_s: float) -> Optional[Any]:
    """The started bond with Nav2's lifecycle manager, made as Nav2's own nodes make it (topic
    `bond`, id = node name, heartbeat timeout 4 s); None where bondpy is not installed (it is
    not on PyPI), in the plain node, or for a period of 0."""
    if not heartbeat_period_s:
        return None
    try:
        from bondpy.bondpy import Bond
    except ImportError:
        return None
    bond = Bond(node, 'bond', node.get_name())
    bond.heartbeat_period = heartbeat_period_s
    bond.heartbeat_timeout = BOND_HEARTBEAT_TIMEOUT_S
    bond.start()
    return bond
