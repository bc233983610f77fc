"""The `human_detector` node: camera images in, vision_msgs detections out.

A thin layer over the ROS-free core. Each camera (one, or those named by `cameras`) is a
CameraChannel; its subscription callback only hands the newest frame to a worker thread, which
takes the newest frame of every camera that has one, converts, detects and publishes each with
its input's header unchanged; meanwhile the executor thread keeps receiving (and deserialising)
the next frames, answering parameter calls and publishing diagnostics.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import Header

from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import HumanDetectorError, InvalidParameterError
from human_detector_ros.health import EngineHealth
from human_detector_ros.newest_frames import NewestFrames
from human_detector_ros.ros.camera_channel import CameraChannel
from human_detector_ros.ros.parameters import declare_parameters, PARAMETERS_BY_NAME
from human_detector_ros.postprocess import NmsConfig
from human_detector_ros.ros.log_bridge import forward_core_logs
from human_detector_ros.ros.messages import label_info_msg
from human_detector_ros.tracking import (
    LIBRARY_MISSING, PersonTracker, TrackerConfig, TrackingUnavailableError)

LOG_THROTTLE_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0


class HumanDetectorNode(Node):
    """Subscribes `image` (or `<image>/compressed`); publishes `detections`, `label_info`,
    `annotated_image` and `/diagnostics`; with `depth`, subscribes `depth_image` and
    `camera_info` and publishes `detections_3d`. With `cameras`, each camera has these topics
    in its sub-namespace (`<camera>/image`, ...); /diagnostics stays shared."""

    def __init__(self) -> None:
        super().__init__('human_detector')
        # rclpy may destroy a node whose construction failed: everything destroy_node
        # touches exists from here on.
        self._frames: Optional[NewestFrames] = None
        self._worker: Optional[threading.Thread] = None
        self._detector: Optional[HumanDetector] = None
        self._values = declare_parameters(self)
        forward_core_logs(self.get_logger())
        self._detector = HumanDetector(
            model_path=self._values['engine_path'] or None,
            backend=self._values['backend'], device=self._values['device'],
            tensorrt_precision=self._values['tensorrt_precision'],
            tensorrt_cache_dir=self._values['tensorrt_cache_dir'] or None)
        self._detector.config = self._nms_config(self._values)
        self.engine_health = EngineHealth()
        # '' is the single camera on the node's own topics.
        cameras = list(self._values['cameras'] or [''])
        self._frames = NewestFrames(cameras)
        self._channels: Dict[str, CameraChannel] = {
            camera: CameraChannel(self, camera, self._values, self._make_tracker(), self._frames)
            for camera in cameras}
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        self._worker = threading.Thread(target=self._work, name='human_detector_pipeline',
                                        daemon=True)
        self._worker.start()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._publish_label_info()
        engine = self._detector.engine
        topics = ', '.join(channel.image_sub.topic_name for channel in self._channels.values())
        self.get_logger().info(
            f'{engine.backend} on {engine.device}: {engine.model_path}; listening on {topics}')

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
        msg = label_info_msg(self.class_names(), self._values['conf_threshold'], header)
        for channel in self._channels.values():
            channel.publish_label_info(msg)

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
            if parameter.name == 'tracking' and value and any(
                    channel.tracker is None for channel in self._channels.values()):
                return SetParametersResult(successful=False, reason=f'tracking: {LIBRARY_MISSING}')
            updates[parameter.name] = value
        if updates:
            self._values.update(updates)
            self._detector.config = self._nms_config(self._values)
            if {'class_names', 'conf_threshold'} & set(updates):
                self._publish_label_info()
            tracker_config = self._tracker_config(self._values) if {
                'tracking', 'tracking_threshold', 'tracking_min_iou', 'tracking_lost_s'
            } & set(updates) else None
            for channel in self._channels.values():
                channel.reconfigure(tracker_config)
        return SetParametersResult(successful=True)

    def _work(self) -> None:
        while True:
            batch = self._frames.take()
            if not batch:
                return
            self._process_batch([(self._channels[camera], msg) for camera, msg in batch])

    def _process_batch(self, batch: List[Tuple[CameraChannel, Any]]) -> None:
        """The newest frame of each camera that has one: convert each, detect them as one
        batch, then each camera tracks, locates, annotates and publishes its own. A bad frame
        or a failure on one drops that frame alone."""
        frames = []
        for channel, msg in batch:
            start = time.perf_counter()
            try:
                bgr = channel.convert(msg)
            except Exception as error:  # the pipeline thread must outlive any one frame
                self._unexpected(channel, error)
                continue
            if bgr is not None:
                frames.append((channel, msg, bgr, (time.perf_counter() - start) * 1e3))
        if not frames:
            return
        results = self._detect([bgr for _, _, bgr, _ in frames])
        detected = [stages for _, stages in results if stages is not None]
        if detected:
            self.engine_health.batch(len(detected), sum(sum(s.values()) for s in detected))
        names = self.class_names()
        for (channel, msg, bgr, convert_ms), (outcome, stages) in zip(frames, results):
            if isinstance(outcome, Exception):
                if isinstance(outcome, HumanDetectorError):
                    channel.detection_failed(str(outcome))
                else:
                    self._unexpected(channel, outcome)
                continue
            start = time.perf_counter()
            try:
                channel.publish(msg, bgr, outcome, names)
            except Exception as error:
                self._unexpected(channel, error)
                continue
            channel.published(msg.header, {
                'convert': convert_ms, **stages, 'publish': (time.perf_counter() - start) * 1e3})

    def _detect(self, frames: List[np.ndarray]
                ) -> List[Tuple[Any, Optional[Dict[str, float]]]]:
        """Per frame: its Detections and stage times (preprocess, infer, postprocess; ms), or
        the exception the detector raised on it and None. One detector call per frame, so a
        frame the engine fails on fails alone."""
        results: List[Tuple[Any, Optional[Dict[str, float]]]] = []
        for bgr in frames:
            try:
                detections = self._detector(bgr)
            except Exception as error:
                results.append((error, None))
                continue
            timings = self._detector.last_timings
            results.append((detections, {'preprocess': timings.preprocess_ms,
                                         'infer': timings.infer_ms,
                                         'postprocess': timings.postprocess_ms}))
        return results

    def _unexpected(self, channel: CameraChannel, error: Exception) -> None:
        channel.health.failed(f'{type(error).__name__}: {error}')
        self.get_logger().error(f'frame dropped, unexpected {type(error).__name__}: {error}',
                                throttle_duration_sec=LOG_THROTTLE_S)

    def _publish_diagnostics(self) -> None:
        engine = self._detector.engine
        hardware_id = f'{engine.backend} {engine.device}'
        engine_values = {'backend': engine.backend, 'device': engine.device,
                         'engine': str(engine.model_path)}
        statuses = [channel.diagnostic_status(engine_values, hardware_id)
                    for channel in self._channels.values()]
        report = self.engine_health.report(
            extra={'cameras': str(len(self._channels)), **engine_values})
        statuses.append(DiagnosticStatus(
            level=bytes([report.level]), name=f'{self.get_name()}: engine',
            message=report.message, hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()]))
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))

    def destroy_node(self) -> None:
        """Stop the pipeline thread, then destroy the node."""
        if self._frames is not None:
            self._frames.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        if self._worker is not None and self._worker.is_alive():
            self.get_logger().error('the pipeline thread is still busy; leaving the engine '
                                    'open rather than freeing it under a running frame')
        elif self._detector is not None:
            self._detector.close()
        super().destroy_node()
