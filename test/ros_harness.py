"""Helpers for tests that run real ROS 2 processes over real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import parameter_dict_from_yaml_file, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

from human_detector_ros.ros.paths import installed_config, installed_executable

# Upstream vision_msgs 4.x hashes: the 2D ones from a build of the real package (rosidl JSON
# output); all of them also computed by rosbags (an independent implementation) from
# vision_msgs 4.1.1's definitions. The 3D messages are unchanged since 4.0.0.
UPSTREAM_TYPE_HASHES = {
    'vision_msgs/msg/Detection2DArray':
        'RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968',
    'vision_msgs/msg/LabelInfo':
        'RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783',
    'vision_msgs/msg/Detection3DArray':
        'RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018',
}

PIPELINE_COUNTS = ('frames published', 'frames dropped (invalid image)',
                   'frames dropped (inference failed)', 'frames superseded by newer ones')
"""The diagnostics keys of the outcomes of a frame; they add up to 'frames received'."""


class RosProcess:
    """A child process whose output goes to a file; stopped with SIGINT like Ctrl-C.

    `env` adds to this process's environment; a variable set to None is removed.
    """

    def __init__(self, command: List[str], log_path: Path,
                 env: Optional[Dict[str, Optional[str]]] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'w')
        environment = dict(os.environ)
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=environment)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout_s: float) -> bool:
        """True once `text` is in the output; False on timeout or when the process ended."""
        end = time.monotonic() + timeout_s
        while text not in self.output():
            if time.monotonic() > end or self.process.poll() is not None:
                return text in self.output()
            time.sleep(0.05)
        return True

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT, then wait; kill if it does not exit. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def parameter_value_from_cli_text(text: str) -> ParameterValue:
    """The ParameterValue `ros2 param set NODE NAME TEXT` sends (ros2param's
    get_parameter_value: YAML-parse TEXT, then type by the Python type found)."""
    value = ParameterValue()
    try:
        parsed = yaml.safe_load(text)
    except yaml.parser.ParserError:
        parsed = text
    typed_lists = ((bool, ParameterType.PARAMETER_BOOL_ARRAY, 'bool_array_value'),
                   (int, ParameterType.PARAMETER_INTEGER_ARRAY, 'integer_array_value'),
                   (float, ParameterType.PARAMETER_DOUBLE_ARRAY, 'double_array_value'),
                   (str, ParameterType.PARAMETER_STRING_ARRAY, 'string_array_value'))
    if isinstance(parsed, bool):
        value.type, value.bool_value = ParameterType.PARAMETER_BOOL, parsed
    elif isinstance(parsed, int):
        value.type, value.integer_value = ParameterType.PARAMETER_INTEGER, parsed
    elif isinstance(parsed, float):
        value.type, value.double_value = ParameterType.PARAMETER_DOUBLE, parsed
    elif isinstance(parsed, list):
        for python_type, parameter_type, field in typed_lists:
            if all(isinstance(item, python_type) for item in parsed):
                value.type = parameter_type
                setattr(value, field, parsed)
                return value
        value.type, value.string_value = ParameterType.PARAMETER_STRING, text
    else:
        value.type, value.string_value = ParameterType.PARAMETER_STRING, text
    return value


PARAMETER_CALL_S = 60.0
"""Hang guard of a parameter service call."""
RESEND_S = 2.0


def answer(node: Node, send: Callable[[], Any], what: str,
           timeout_s: float = PARAMETER_CALL_S) -> Any:
    """Spin until a request `send()` made is answered; return the response. Unanswered, it is
    sent again every RESEND_S, as a person runs the command again: a request can go to a
    server the graph still lists although its node has just stopped (a restart under the same
    name), or be sent before the server's reader matched. Parameter calls are idempotent."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        future = send()
        rclpy.spin_until_future_complete(
            node, future, timeout_sec=max(0.0, min(RESEND_S, end - time.monotonic())))
        if future.done():
            return future.result()
    raise AssertionError(f'{what} did not answer within {timeout_s} s')


def ros2_param_set(node: Node, target: str, name: str, text: str) -> SetParametersResult:
    """Call TARGET/set_parameters exactly as `ros2 param set TARGET NAME TEXT` does."""
    client = node.create_client(SetParameters, f'{target}/set_parameters')
    request = SetParameters.Request(
        parameters=[Parameter(name=name, value=parameter_value_from_cli_text(text))])
    try:
        return answer(node, lambda: client.call_async(request),
                      f'set_parameters of {target}').results[0]
    finally:
        node.destroy_client(client)


def ros2_param_delete(node: Node, target: str, name: str) -> SetParametersResult:
    """Call TARGET/set_parameters exactly as `ros2 param delete TARGET NAME` does (a value of
    type PARAMETER_NOT_SET undeclares a parameter that accepts it)."""
    client = node.create_client(SetParameters, f'{target}/set_parameters')
    request = SetParameters.Request(parameters=[Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_NOT_SET))])
    try:
        return answer(node, lambda: client.call_async(request),
                      f'set_parameters of {target}').results[0]
    finally:
        node.destroy_client(client)


def ros2_param_get(node: Node, target: str, name: str) -> Any:
    """The value of parameter NAME of TARGET as `ros2 param get TARGET NAME` reads it."""
    client = node.create_client(GetParameters, f'{target}/get_parameters')
    request = GetParameters.Request(names=[name])
    try:
        return parameter_value_to_python(answer(
            node, lambda: client.call_async(request), f'get_parameters of {target}').values[0])
    finally:
        node.destroy_client(client)


def ros2_param_dump(node: Node, target: str) -> str:
    """What `ros2 param dump TARGET` prints (ros2param's DumpVerb: list and get through
    rclpy's AsyncParameterClient, nest names on '.', yaml.dump in block style under the
    node's full name; unset values are null)."""
    client = AsyncParameterClient(node, target)
    names = sorted(answer(node, client.list_parameters, f'list_parameters of {target}')
                   .result.names)
    values = answer(node, lambda: client.get_parameters(names),
                    f'get_parameters of {target}').values
    parameters: Dict[str, Any] = {}
    for name, value in zip(names, values):
        *groups, leaf = name.split('.')
        level = parameters
        for group in groups:
            level = level.setdefault(group, {})
        level[leaf] = parameter_value_to_python(value)
    return yaml.dump({target: {'ros__parameters': parameters}}, default_flow_style=False) + '\n'


def ros2_param_load(node: Node, target: str, path: Path) -> Dict[str, SetParametersResult]:
    """`ros2 param load TARGET PATH`: rclpy's AsyncParameterClient.load_parameter_file, as
    ros2param calls it; returns each parameter's result by name."""
    client = AsyncParameterClient(node, target)
    response = answer(node, lambda: client.load_parameter_file(str(path)),
                      f'set_parameters of {target}')
    names = list(parameter_dict_from_yaml_file(str(path), target_nodes=[target]))
    assert len(names) == len(response.results)
    return dict(zip(names, response.results))


def detector_command(*arguments: str) -> List[str]:
    """The human_detector node as `ros2 run` starts it, with the installed params file."""
    return [installed_executable('human_detector'), '--ros-args',
            '--params-file', installed_config('human_detector.yaml'), *arguments]


def deep_reliable_input(topic: str) -> List[str]:
    """Arguments that make the node's input `topic` reliable and deep (QoS overrides), so
    that a test can account for every frame it sends."""
    prefix = f'qos_overrides.{topic}.subscription.'
    return ['-p', prefix + 'reliability:=reliable', '-p', prefix + 'history:=keep_last',
            '-p', prefix + 'depth:=100000']


class DiagnosticsMonitor:
    """Collects the /diagnostics statuses named `status_name`, in arrival order."""

    def __init__(self, node: Node, status_name: str = 'human_detector: pipeline') -> None:
        self.node = node
        self.status_name = status_name
        self.statuses: List[DiagnosticStatus] = []
        self._subscription = node.create_subscription(
            DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.statuses += [status for status in msg.status if status.name == self.status_name]

    def latest(self) -> Optional[DiagnosticStatus]:
        return self.statuses[-1] if self.statuses else None

    def values(self) -> Dict[str, str]:
        """Key/values of the newest status; empty before the first."""
        latest = self.latest()
        return {kv.key: kv.value for kv in latest.values} if latest else {}

    def counts(self) -> Dict[str, int]:
        """'frames received' and PIPELINE_COUNTS of the newest status, as integers."""
        values = self.values()
        return {key: int(values[key]) for key in ('frames received',) + PIPELINE_COUNTS
                if key in values}

    def wait_for(self, condition: Callable[[DiagnosticStatus], bool], timeout_s: float
                 ) -> Optional[DiagnosticStatus]:
        """Spin until a status arriving from now on satisfies `condition`; return it, or
        None on timeout."""
        seen = len(self.statuses)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for status in self.statuses[seen:]:
                if condition(status):
                    return status
            seen = len(self.statuses)
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return None

    def settled_counts(self, received: Optional[int] = None, timeout_s: float = 60.0
                       ) -> Dict[str, int]:
        """Spin until a status says `received` frames (any number if None) came in and each
        has an outcome; return its counts (the last ones seen on timeout). With None, only
        statuses that arrive after this call count."""
        if received is None:
            self.statuses.clear()

        def settled() -> bool:
            counts = self.counts()
            return bool(counts) and received in (None, counts['frames received']) and \
                counts['frames received'] == sum(counts[key] for key in PIPELINE_COUNTS)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not settled():
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return self.counts()

    def destroy(self) -> None:
        self.node.destroy_subscription(self._subscription)


def ros2_lifecycle_get(node: Node, target: str) -> str:
    """The state label `ros2 lifecycle get TARGET` prints (GetState), e.g. 'unconfigured'."""
    client = node.create_client(GetState, f'{target}/get_state')
    try:
        return answer(node, lambda: client.call_async(GetState.Request()),
                      f'get_state of {target}').current_state.label
    finally:
        node.destroy_client(client)


def change_state(node: Node, target: str, transition: Transition) -> bool:
    """Call TARGET/change_state with `transition`; return the success flag. Not resent: a
    transition is not idempotent."""
    client = node.create_client(ChangeState, f'{target}/change_state')
    try:
        assert client.wait_for_service(timeout_sec=PARAMETER_CALL_S)
        future = client.call_async(ChangeState.Request(transition=transition))
        rclpy.spin_until_future_complete(node, future, timeout_sec=PARAMETER_CALL_S)
        assert future.done(), f'change_state of {target} did not answer'
        return future.result().success
    finally:
        node.destroy_client(client)


def ros2_lifecycle_set(node: Node, target: str, label: str) -> bool:
    """`ros2 lifecycle set TARGET LABEL`: the transition of that label among the available
    ones (GetAvailableTransitions), then ChangeState with it; returns the success flag."""
    client = node.create_client(GetAvailableTransitions, f'{target}/get_available_transitions')
    try:
        available = answer(node, lambda: client.call_async(GetAvailableTransitions.Request()),
                           f'get_available_transitions of {target}')
    finally:
        node.destroy_client(client)
    [transition] = [description.transition for description in available.available_transitions
                    if description.transition.label == label]
    return change_state(node, target, transition)
