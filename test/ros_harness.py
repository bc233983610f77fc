"""Helpers for tests that run real ROS 2 processes over real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import rclpy
import yaml
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node


class RosProcess:
    """A child process whose output goes to a file; stopped with SIGINT like Ctrl-C."""

    def __init__(self, command: List[str], log_path: Path,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, **(env or {})))

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

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


def ros2_param_set(node: Node, target: str, name: str, text: str,
                   timeout_s: float = 10.0) -> SetParametersResult:
    """Call TARGET/set_parameters exactly as `ros2 param set TARGET NAME TEXT` does."""
    client = node.create_client(SetParameters, f'{target}/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f'{target} has no parameters'
        request = SetParameters.Request(
            parameters=[Parameter(name=name, value=parameter_value_from_cli_text(text))])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
        assert future.done(), f'set_parameters of {target} did not answer'
        return future.result().results[0]
    finally:
        node.destroy_client(client)
