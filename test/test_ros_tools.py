"""What the ROS 2 command-line tools write and send, against the node in its own process:
`ros2 param dump` files load back (at start and through `ros2 param load`), and integers
given for double parameters (`ros2 param set`, `-p`, params files) are taken as doubles.

The tools themselves are not installable without a ROS distro; test/ros_harness.py does
exactly what they do (ros2param's dump and load through rclpy's AsyncParameterClient, its
value guessing for `ros2 param set`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node

from human_detector_ros.ros.parameters import PARAMETERS, PARAMETERS_BY_NAME
from ros_harness import (
    detector_command, ros2_param_dump, ros2_param_get, ros2_param_load, ros2_param_set)

STARTUP_S = 60.0
LISTS = {name for name, spec in PARAMETERS_BY_NAME.items() if spec.default is None}
NAME = 'dumped_detector'
TARGET = '/' + NAME


@pytest.fixture
def tool(rclpy_context) -> Iterator[Node]:
    node = rclpy.create_node('ros2cli_standin')
    yield node
    node.destroy_node()


def unset_as_none(dump: str) -> dict:
    """The dumped parameters, with each unset list as None. The node treats an empty list, an
    unset one and a reloaded null alike (all classes, the model's names): rcl's params-file
    parser reads `[]` as unset, and rclpy's loader sends null as the string 'None'."""
    parameters = yaml.safe_load(dump)[TARGET]['ros__parameters']
    return {name: None if name in LISTS and value in ([], 'None') else value
            for name, value in parameters.items()}


def start_detector(start_process, tiny_model: Path, label: str, *arguments: str):
    node = start_process(detector_command(
        '-r', f'__node:={NAME}', '-r', 'image:=/dumped/image',
        '-p', f'engine_path:={tiny_model}', *arguments), label)
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    return node


@pytest.mark.parametrize('settings', [
    [],
    [('classes', '[]'), ('class_names', '[]')],
    [('classes', '[1]'), ('class_names', '["person", "fallen person"]'),
     ('conf_threshold', '0.3'), ('agnostic_nms', 'false'), ('no_image_warn_s', '7')],
], ids=['defaults', 'emptied lists', 'changed'])
def test_a_dump_loads_back_at_start_and_live(tool, start_process, tiny_model, tmp_path,
                                             settings: List[Tuple[str, str]]):
    first = start_detector(start_process, tiny_model, 'first')
    for name, text in settings:
        assert ros2_param_set(tool, TARGET, name, text).successful, name
    dump = ros2_param_dump(tool, TARGET)
    if not settings:
        parameters = yaml.safe_load(dump)[TARGET]['ros__parameters']
        assert parameters['classes'] is None and parameters['class_names'] is None
    assert first.stop() == 0, first.output()
    dumped = tmp_path / 'dump.yaml'
    dumped.write_text(dump)

    again = start_process(detector_command('-r', f'__node:={NAME}', '-r', 'image:=/dumped/image',
                                           '--params-file', str(dumped)), 'again')
    assert again.wait_for_output(str(tiny_model), STARTUP_S), again.output()
    reloaded = ros2_param_dump(tool, TARGET)
    assert unset_as_none(reloaded) == unset_as_none(dump)

    # `ros2 param load` into the running node: every parameter but the read-only ones is set.
    results = ros2_param_load(tool, TARGET, dumped)
    refused = {name for name, result in results.items() if not result.successful}
    read_only = {name for name in results if name.startswith('qos_overrides.') or
                 PARAMETERS_BY_NAME.get(name) and PARAMETERS_BY_NAME[name].read_only or
                 name == 'start_type_description_service'}
    assert refused == read_only, {name: results[name].reason for name in refused}
    assert unset_as_none(ros2_param_dump(tool, TARGET)) == unset_as_none(dump)
    assert again.process.poll() is None, again.output()


DOUBLES = [spec.name for spec in PARAMETERS if spec.type == ParameterType.PARAMETER_DOUBLE]


def test_integers_for_doubles_are_taken_as_doubles_at_start_and_by_ros2_param_set(
        tool, start_process, tiny_model, tmp_path):
    params = tmp_path / 'integers.yaml'
    params.write_text('/**:\n  ros__parameters:\n    conf_threshold: 1\n')
    start_detector(start_process, tiny_model, 'node', '--params-file', str(params),
                   '-p', 'no_image_warn_s:=5', '-p', 'iou_threshold:=0')
    for name, expected in (('conf_threshold', 1.0), ('no_image_warn_s', 5.0),
                           ('iou_threshold', 0.0)):
        value = ros2_param_get(tool, TARGET, name)
        assert isinstance(value, float) and value == expected, (name, value)
    for name in DOUBLES:
        assert ros2_param_set(tool, TARGET, name, '1').successful, name
        value = ros2_param_get(tool, TARGET, name)
        assert isinstance(value, float) and value == 1.0, (name, value)
    refused = ros2_param_set(tool, TARGET, 'conf_threshold', '2')
    assert not refused.successful and refused.reason
    assert ros2_param_get(tool, TARGET, 'conf_threshold') == 1.0


@pytest.mark.parametrize('arguments', [
    ['-p', 'conf_threshold:=2'],
    ['-p', 'no_image_warn_s:=0'],
])
def test_an_integer_out_of_range_for_a_double_is_refused_at_start(start_process, arguments):
    node = start_process(detector_command(*arguments), 'node')
    assert node.process.wait(timeout=STARTUP_S) == 1
    name = arguments[1].split(':=')[0]
    assert f'parameter {name} = ' in node.output(), node.output()
    assert 'Traceback' not in node.output()


# The node under an rclpy without pre-set parameter callbacks, as Humble's rclpy is.
WITHOUT_PRE_SET_CALLBACKS = """
import sys
import rclpy.node
del rclpy.node.Node.add_pre_set_parameters_callback
from human_detector_ros.ros.entry import human_detector
sys.exit(human_detector())
"""


def test_without_pre_set_callbacks_an_integer_for_a_double_is_refused_with_the_fix(
        tool, start_process, tiny_model):
    node = start_process([sys.executable, '-c', WITHOUT_PRE_SET_CALLBACKS, '--ros-args',
                          '-r', f'__node:={NAME}', '-p', f'engine_path:={tiny_model}',
                          '-p', 'no_image_warn_s:=5'], 'node')
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    assert ros2_param_get(tool, TARGET, 'no_image_warn_s') == 5.0
    refused = ros2_param_set(tool, TARGET, 'conf_threshold', '1')
    assert not refused.successful
    assert refused.reason == 'conf_threshold: is a floating-point number: write 1.0'
    assert ros2_param_set(tool, TARGET, 'conf_threshold', '1.0').successful
    value = ros2_param_get(tool, TARGET, 'conf_threshold')
    assert isinstance(value, float) and value == 1.0


def test_an_empty_cameras_list_as_a_dump_writes_it_starts_one_camera(
        start_process, tiny_model, tmp_path):
    params = tmp_path / 'cameras.yaml'
    params.write_text(f'{TARGET}:\n  ros__parameters:\n    cameras: []\n')
    node = start_detector(start_process, tiny_model, 'node', '--params-file', str(params))
    assert node.wait_for_output('listening on /dumped/image\n', STARTUP_S), node.output()
