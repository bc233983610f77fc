"""The node's parameters: one table of names, defaults, descriptors and validity checks."""
from __future__ import annotations

import array
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from human_detector_ros.engines import BACKENDS
from human_detector_ros.engines.base import is_device_name
from human_detector_ros.engines.tensorrt_build import DEFAULT_PRECISION, PRECISIONS
from human_detector_ros.errors import InvalidParameterError

BACKEND_CHOICES = ('auto',) + BACKENDS
INPUT_TRANSPORTS = ('raw', 'compressed')


def _one_of(choices: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        return None if value in choices else f'must be one of {", ".join(choices)}'
    return check


def _device(value: Any) -> Optional[str]:
    return None if is_device_name(value) else 'must be auto, cpu, cuda or cuda:N'


# rclpy gives integer arrays as array.array, other arrays as lists.
LIST_TYPES = (list, tuple, array.array)
# `ros2 param dump` writes an unset parameter as `null`. Loaded back, that is the string
# 'null' from a --params-file (rcl's parser; the other YAML spellings likewise) and 'None'
# through `ros2 param load` (rclpy's loader): both mean unset.
UNSET_SPELLINGS = ('null', 'Null', 'NULL', '~', 'None')


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _class_indices(value: Any) -> Optional[str]:
    valid = isinstance(value, LIST_TYPES) and all(
        isinstance(index, int) and not isinstance(index, bool) and index >= 0
        for index in value)
    return None if valid else 'must be a list of class indices >= 0, e.g. [0]'


def _names(value: Any) -> Optional[str]:
    valid = isinstance(value, LIST_TYPES) and all(isinstance(name, str) for name in value)
    return None if valid else 'must be a list of strings, e.g. ["person"]'


CAMERA_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*')


def _camera_names(value: Any) -> Optional[str]:
    valid = isinstance(value, LIST_TYPES) and all(
        isinstance(name, str) and CAMERA_NAME.fullmatch(name) for name in value) and \
        len(set(value)) == len(value)
    return None if valid else ('must be a list of unique relative topic names (letters, '
                               'digits, _ and /, not starting with a digit), e.g. '
                               '["front", "rear"]')


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter. Lists default to unset and are dynamically typed, because
    `ros2 param set ... '[]'` sends an empty list as a bool array; `check` validates them.
    Doubles are dynamically typed too, so that an integer given for one reaches
    `declare_parameters` (and, on Humble, `problem`) instead of rclpy's bare type error."""

    name: str
    type: int
    default: Any
    description: str
    # Read once when the engine is set up: read-only in the plain node, settable while
    # unconfigured in the managed one.
    read_only: bool = False
    float_range: Optional[Tuple[float, float]] = None
    int_range: Optional[Tuple[int, int]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None

    def descriptor(self, managed: bool = False) -> ParameterDescriptor:
        """The ParameterDescriptor rclpy enforces: type, read-only flag and range. In a
        managed node the node itself refuses `read_only` parameters outside unconfigured."""
        descriptor = ParameterDescriptor(
            name=self.name, type=self.type, description=self.description,
            read_only=self.read_only and not managed,
            dynamic_typing=self.default is None or self.type == ParameterType.PARAMETER_DOUBLE)
        if self.float_range:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=self.float_range[0], to_value=self.float_range[1])]
        if self.int_range:
            descriptor.integer_range = [IntegerRange(
                from_value=self.int_range[0], to_value=self.int_range[1])]
        return descriptor

    def is_unset(self, value: Any) -> bool:
        """True for the unset value of a list parameter, as given or as a reloaded dump."""
        return self.default is None and (value is None or value in UNSET_SPELLINGS)

    def problem(self, value: Any) -> Optional[str]:
        """Why `value` is invalid for this parameter, or None when it is valid."""
        if self.is_unset(value):
            return None
        if self.type == ParameterType.PARAMETER_DOUBLE and not isinstance(value, float):
            if _is_integer(value):
                return f'is a floating-point number: write {value}.0'
            return f'write a number, e.g. {self.default}'
        return self.check(value) if self.check else None

    def value_of(self, value: Any) -> Any:
        """The value the node works with: None when unset."""
        return None if self.is_unset(value) else value


PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec('engine_path', ParameterType.PARAMETER_STRING, '',
                  'Model file: TensorRT .engine/.plan, ONNX .onnx or TorchScript; '
                  'empty = the default model', read_only=True),
    ParameterSpec('backend', ParameterType.PARAMETER_STRING, 'auto',
                  'Inference backend: ' + '|'.join(BACKEND_CHOICES) + ' (auto: from the file)',
                  read_only=True, check=_one_of(BACKEND_CHOICES)),
    ParameterSpec('device', ParameterType.PARAMETER_STRING, 'auto',
                  'auto|cpu|cuda|cuda:N', read_only=True, check=_device),
    ParameterSpec('tensorrt_precision', ParameterType.PARAMETER_STRING, DEFAULT_PRECISION,
                  'Precision of the TensorRT engine built from an ONNX engine_path with backend '
                  'tensorrt: ' + '|'.join(PRECISIONS) + ' (fp16 builds fp32 on a GPU without '
                  'fast FP16; TensorRT 11 uses the ONNX model\'s own types)',
                  read_only=True, check=_one_of(PRECISIONS)),
    ParameterSpec('max_batch', ParameterType.PARAMETER_INTEGER, 0,
                  'Most frames one engine call takes, for a model with a dynamic batch axis; '
                  '0 = the number of cameras; a '
                  'TensorRT engine built from ONNX gets the batch profile 1 to max_batch (part '
                  'of its cache key). A model with a fixed batch keeps its own',
                  read_only=True, int_range=(0, 64)),
    ParameterSpec('tensorrt_cache_dir', ParameterType.PARAMETER_STRING, '',
                  'Folder for TensorRT engines built from ONNX; empty = '
                  '$HUMAN_DETECTOR_ROS_CACHE/engines, else ~/.cache/human_detector_ros/engines',
                  read_only=True),
    ParameterSpec('input_transport', ParameterType.PARAMETER_STRING, 'raw',
                  'raw: sensor_msgs/Image on `image`; compressed: '
                  'sensor_msgs/CompressedImage on `<image>/compressed`',
                  read_only=True, check=_one_of(INPUT_TRANSPORTS)),
    ParameterSpec('cameras', ParameterType.PARAMETER_STRING_ARRAY, None,
                  'Camera names: each camera has the topics of one in its sub-namespace '
                  '(<camera>/image, <camera>/detections, ...); unset or empty = one camera on '
                  'image, detections, ...', read_only=True, check=_camera_names),
    ParameterSpec('conf_threshold', ParameterType.PARAMETER_DOUBLE, 0.5,
                  'Minimum confidence of a published detection', float_range=(0.0, 1.0)),
    ParameterSpec('iou_threshold', ParameterType.PARAMETER_DOUBLE, 0.45,
                  'NMS: boxes overlapping a better one by more than this IoU are dropped',
                  float_range=(0.0, 1.0)),
    ParameterSpec('max_det', ParameterType.PARAMETER_INTEGER, 300,
                  'Maximum detections per image', int_range=(1, 100000)),
    ParameterSpec('classes', ParameterType.PARAMETER_INTEGER_ARRAY, None,
                  'Class indices to keep; unset or empty = all', check=_class_indices),
    # True unlike Ultralytics: the default model's classes are states of one person.
    ParameterSpec('agnostic_nms', ParameterType.PARAMETER_BOOL, True,
                  'NMS across classes instead of per class'),
    ParameterSpec('class_names', ParameterType.PARAMETER_STRING_ARRAY, None,
                  'Class names by index; unset or empty = the names stored in the model',
                  check=_names),
    ParameterSpec('publish_annotated', ParameterType.PARAMETER_BOOL, True,
                  'Publish annotated_image (drawn only while someone subscribes)'),
    ParameterSpec('no_image_warn_s', ParameterType.PARAMETER_DOUBLE, 3.0,
                  'Diagnostics turn WARN after this many seconds without an image',
                  float_range=(0.1, 3600.0)),
    # Tracking (human_detector_ros.tracking); changing a knob restarts the tracker.
    ParameterSpec('tracking', ParameterType.PARAMETER_BOOL, True,
                  'Track people across frames: a persistent id in each Detection2D.id'),
    ParameterSpec('tracking_threshold', ParameterType.PARAMETER_DOUBLE, 0.4,
                  'ByteTrack track_thresh: boxes above it are associated first, a new track '
                  'needs it + 0.1; lower boxes (down to 0.1) only continue tracks',
                  float_range=(0.0, 1.0)),
    ParameterSpec('tracking_min_iou', ParameterType.PARAMETER_DOUBLE, 0.2,
                  'Smallest IoU between a track and a box to associate them (ByteTrack '
                  'match_thresh = 1 - this)', float_range=(0.01, 1.0)),
    ParameterSpec('tracking_lost_s', ParameterType.PARAMETER_DOUBLE, 1.0,
                  'Seconds an unseen person keeps their id; a longer gap between frames, or a '
                  'stamp going backwards, restarts the tracker', float_range=(0.05, 60.0)),
    # 3D positions from an aligned depth image (human_detector_ros.depth).
    ParameterSpec('depth', ParameterType.PARAMETER_BOOL, False,
                  'Subscribe depth_image and camera_info, publish detections_3d',
                  read_only=True),
    ParameterSpec('depth_sync_tolerance_s', ParameterType.PARAMETER_DOUBLE, 0.02,
                  'Largest stamp difference between a colour frame and its depth frame',
                  float_range=(0.0, 1.0)),
)
LIFECYCLE_PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec('autostart_node', ParameterType.PARAMETER_BOOL, False,
                  'Managed node only: configure and activate at start, without a lifecycle '
                  'manager', read_only=True),
    ParameterSpec('bond_heartbeat_period', ParameterType.PARAMETER_DOUBLE, 0.1,
                  'Managed node only: heartbeat period (s) of the bond with a Nav2 lifecycle '
                  'manager (where bondpy is installed), read at activate; 0 = no bond',
                  float_range=(0.0, 10.0)),
)
"""The managed node's own parameters, named as Nav2's nodes name them."""
PARAMETERS_BY_NAME: Dict[str, ParameterSpec] = {
    spec.name: spec for spec in PARAMETERS + LIFECYCLE_PARAMETERS}
"""Every parameter either node declares, by name."""


def as_declared(parameters: List[Parameter]) -> List[Parameter]:
    """Pre-set parameters callback: values the ROS tools send, as the node declares them.

    `ros2 param set NODE conf_threshold 1` sends an INTEGER for a double, which rclpy would
    reject: it becomes that double. "Not set" for an optional list (`ros2 param load` of a
    dumped `null`, `ros2 param delete`) becomes the empty list, which means unset too: rclpy
    would otherwise undeclare the parameter, and every later set of it would fail.
    """
    return [_as_declared(parameter) for parameter in parameters]


def _as_declared(parameter: Parameter) -> Parameter:
    spec = PARAMETERS_BY_NAME.get(parameter.name)
    if spec is None:
        return parameter
    if spec.type == ParameterType.PARAMETER_DOUBLE and _is_integer(parameter.value):
        return Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
    if spec.default is None and parameter.type_ == Parameter.Type.NOT_SET:
        return Parameter(parameter.name, Parameter.Type(spec.type), [])
    return parameter


def declare_parameters(node: Node, managed: bool = False) -> Dict[str, Any]:
    """Declare every parameter on `node` (with LIFECYCLE_PARAMETERS when `managed`); return
    name -> value (None for unset lists).

    What the ROS tools write loads back: an integer for a double (`-p no_image_warn_s:=5`,
    `x: 5` in a params file) is taken as that double, and a list that `ros2 param dump`
    wrote as `null` stays unset. Later integers for doubles (`ros2 param set`) and "not set"
    for lists are converted (`as_declared`) where rclpy has pre-set parameter callbacks (Iron
    and newer); on Humble `problem` rejects such integers with a reason that says to write
    1.0, and the node refuses "not set".
    Raises InvalidParameterError naming the parameter, the value and the fix.
    """
    values = {}
    for spec in PARAMETERS + (LIFECYCLE_PARAMETERS if managed else ()):
        descriptor = spec.descriptor(managed)
        try:
            # rclpy cannot undeclare a read-only parameter: a read-only list is declared
            # writable first, then again read-only with its value (None for a reloaded null).
            redeclare = descriptor.read_only and spec.default is None
            first = spec.descriptor(managed)
            first.read_only = first.read_only and not redeclare
            value = node.declare_parameter(spec.name, spec.default, first).value
            if redeclare or (spec.is_unset(value) and value is not None):
                node.undeclare_parameter(spec.name)
                value = node.declare_parameter(spec.name, spec.value_of(value), descriptor,
                                               ignore_override=True).value
            elif spec.type == ParameterType.PARAMETER_DOUBLE and _is_integer(value):
                result = node.set_parameters(as_declared([node.get_parameter(spec.name)]))
                if not result[0].successful:
                    raise InvalidParameterError(
                        f'parameter {spec.name} = {value}: {result[0].reason}. Fix it in the '
                        'params file or on the command line (-p name:=value).')
                value = node.get_parameter(spec.name).value
        except ParameterException as error:
            raise InvalidParameterError(f'parameter {spec.name}: {error}') from error
        problem = spec.problem(value)
        if problem:
            raise InvalidParameterError(
                f'parameter {spec.name} = {value!r}: {problem}. Fix it in the params '
                'file or on the command line (-p name:=value).')
        values[spec.name] = spec.value_of(value)
    if hasattr(node, 'add_pre_set_parameters_callback'):  # rclpy in Iron and newer
        node.add_pre_set_parameters_callback(as_declared)
    return values
