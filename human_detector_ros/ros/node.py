"""The `human_detector` node: camera images in, vision_msgs detections out.

A thin layer over the ROS-free core. Each camera (one, or those named by `cameras`) is a
CameraChannel; its subscription callback only hands the newest frame to a worker thread, which
takes the newest frame of every camera that has one, converts each, runs them through the
core's FramePipeline as one batch (detect, track per camera, locate in 3D, annotate) and
publishes each camera's results with its input's header unchanged; meanwhile the executor
thread keeps receiving (and deserialising) the next frames, answering parameter calls and
publishing diagnostics.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleState, Node as LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import Header

from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import HumanDetectorError, InvalidParameterError
from human_detector_ros.frame_pipeline import FramePipeline, FrameResult
from human_detector_ros.health import EngineHealth
from human_detector_ros.newest_frames import NewestFrames
from human_detector_ros.ros.camera_channel import CameraChannel
from human_detector_ros.ros.parameters import declare_parameters, PARAMETERS_BY_NAME
from human_detector_ros.postprocess import NmsConfig
from human_detector_ros.ros.log_bridge import forward_core_logs
from human_detector_ros.ros.messages import label_info_msg
from human_detector_ros.tracking import LIBRARY_MISSING, TrackerConfig, TrackingUnavailableError

DIAGNOSTICS_PERIOD_S = 1.0
BOND_HEARTBEAT_TIMEOUT_S = 4.0


class HumanDetectorNode(LifecycleNode):
    """Subscribes `image` (or `<image>/compressed`); publishes `detections`, `label_info`,
    `annotated_image` and `/diagnostics`; with `depth`, subscribes `depth_image` and
    `camera_info` and publishes `detections_3d`. With `cameras`, each camera has these topics
    in its sub-namespace (`<camera>/image`, ...); /diagnostics stays shared.

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
        self._frames: Optional[NewestFrames] = None
        self._worker: Optional[threading.Thread] = None
        self._detector: Optional[HumanDetector] = None
        self._pipeline: Optional[FramePipeline] = None
        self._channels: Dict[str, CameraChannel] = {}
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
            max_batch=self._values['max_batch'] or len(self._values['cameras'] or ['']))
        self._detector.config = self._nms_config(self._values)
        self.engine_health = EngineHealth()
        self._pipeline = self._make_pipeline()
        # '' is the single camera on the node's own topics.
        self._channels = {camera: CameraChannel(self, camera, self._values, self._publisher)
                          for camera in self._values['cameras'] or ['']}
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
        self._frames = NewestFrames(list(self._channels))
        for channel in self._channels.values():
            channel.activate(self._frames)
        self._worker = threading.Thread(target=self._work, name='human_detector_pipeline',
                                        daemon=True)
        self._worker.start()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        self._bond = make_bond(self, self._values.get('bond_heartbeat_period', 0.0))
        topics = ', '.join(channel.image_sub.topic_name for channel in self._channels.values())
        self.get_logger().info(f'listening on {topics}')

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; a frame in work finishes first. The engine stays loaded."""
        self._stop_taking_frames()
        return super().on_deactivate(state)

    def _stop_taking_frames(self) -> None:
        if self._bond is not None:
            self._bond.break_bond()
            self._bond = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        self._stop_worker()
        for channel in self._channels.values():
            channel.deactivate()

    def _stop_worker(self) -> bool:
        """Stop the pipeline thread; False if it is still busy after 10 s."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None
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
        self._channels = {}
        self._pipeline = None
        if self._worker is None and self._detector is not None:
            self._detector.close()
        self._detector = None

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
        msg = label_info_msg(self.class_names(), self._values['conf_threshold'], header)
        for channel in self._channels.values():
            channel.publish_label_info(msg)

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        configured = self._detector is not None
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue
            if parameter.type_ == Parameter.Type.NOT_SET:  # see parameters.as_declared
                return SetParametersResult(
                    successful=False, reason=f'{parameter.name} cannot be deleted: set a value '
                                             '(an empty list [] unsets a list)')
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
            for channel in self._channels.values():
                channel.reconfigure()
            if {'class_names', 'conf_threshold'} & set(updates):
                self._publish_label_info()
            if 'class_names' in updates:
                self._pipeline.reconfigure(names=self.class_names())
            if {'tracking', 'tracking_threshold', 'tracking_min_iou',
                    'tracking_lost_s'} & set(updates):
                self._pipeline.reconfigure(tracking=self._values['tracking'],
                                           tracker_config=self._tracker_config(self._values))
        return SetParametersResult(successful=True)

    def _work(self) -> None:
        frames = self._frames
        while True:
            batch = frames.take()
            if not batch:
                return
            try:
                self._process_batch([(self._channels[camera], msg) for camera, msg in batch])
            except Exception as error:  # the pipeline thread must outlive any one batch
                for camera, _ in batch:
                    self._channels[camera].unexpected(error)

    def _process_batch(self, batch: List[Tuple[CameraChannel, Any]]) -> None:
        """The newest frame of each camera that has one: convert each, run them through the
        pipeline as one batch and publish each camera's results on its channel. A bad frame,
        or a failure on one, drops that frame alone."""
        inputs = []
        for channel, msg in batch:
            start = time.perf_counter()
            try:
                bgr = channel.convert(msg)
            except Exception as error:  # one camera's bad message drops its frame alone
                channel.unexpected(error)
                continue
            if bgr is not None:
                inputs.append((channel, msg.header, bgr, (time.perf_counter() - start) * 1e3))
        if not inputs:
            return
        outcomes: Dict[str, Any] = {}

        def on_tracked(result: FrameResult) -> None:
            channel, header = self._channels[result.camera], headers[result.camera]
            try:
                outcomes[result.camera] = channel.publish_detections(header, result)
            except Exception as error:  # publish the other cameras' detections all the same
                outcomes[result.camera] = error

        headers = {channel.camera: header for channel, header, _, _ in inputs}
        results = self._pipeline.process_batch(
            [channel.camera_frame(header, bgr) for channel, header, bgr, _ in inputs],
            on_tracked)
        detected = sum(result.error is None for result in results)
        if detected:
            self.engine_health.batch(detected, self._pipeline.detect_ms)
        for (channel, header, _, convert_ms), result in zip(inputs, results):
            if result.error is not None:
                channel.detection_failed(str(result.error))
                continue
            outcome = outcomes[channel.camera]
            if isinstance(outcome, Exception):
                channel.unexpected(outcome)
                continue
            flat, publish_s = outcome
            start = time.perf_counter()
            try:
                channel.publish_rest(header, result, flat)
            except Exception as error:
                channel.unexpected(error)
                continue
            channel.published(header, {'convert': convert_ms, **result.timings_ms,
                                       'publish': (publish_s + time.perf_counter() - start)
                                       * 1e3})

    def _publish_diagnostics(self) -> None:
        engine = self._detector.engine
        hardware_id = f'{engine.backend} {engine.device}'
        engine_values = {'backend': engine.backend, 'device': engine.device,
                         'engine': str(engine.model_path)}
        statuses = [channel.diagnostic_status(engine_values, hardware_id,
                                              self._pipeline.tracker_resets(camera))
                    for camera, channel in self._channels.items()]
        report = self.engine_health.report(
            extra={'cameras': str(len(self._channels)), **engine_values})
        statuses.append(DiagnosticStatus(
            level=bytes([report.level]), name=f'{self.get_name()}: engine',
            message=report.message, hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()]))
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))

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
