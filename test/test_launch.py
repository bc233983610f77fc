"""launch/detect.launch.py: its arguments, and the nodes it starts, run for real.

launch and launch_ros are not installable without a ROS distro: test/launch_standin.py runs
the launch file on a recording stand-in of their API and builds the command line launch_ros
would; the real node is started with exactly that, and checked over DDS.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import pytest
import rclpy
import yaml

from launch_standin import launch_description, launch_processes
from ros_harness import ros2_lifecycle_get, ros2_lifecycle_set, ros2_param_get

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 60.0


def test_the_readme_lists_exactly_the_declared_launch_arguments():
    section = (ROOT / 'README.md').read_text().split('### Launch arguments', 1)[1]
    table = section.split('\n\n', 2)[1]
    documented = set(re.findall(r'^\| `(\w+)` \|', table, re.MULTILINE))
    declared = {entity.name for entity in launch_description().entities
                if hasattr(entity, 'default_value')}
    assert documented == declared


def test_a_params_file_that_does_not_exist_is_an_error_that_names_it(tmp_path):
    missing = tmp_path / 'no_such_params.yaml'
    with pytest.raises(Exception, match=re.escape(str(missing))):
        launch_processes({'params_file': str(missing)}, tmp_path)


@pytest.mark.parametrize('arguments, wrong', [
    ({'use_sim_time': 'yes please'}, 'use_sim_time'),
    ({'log_level': 'loud'}, 'log_level'),
])
def test_invalid_launch_arguments_are_errors_that_name_them(tmp_path, arguments, wrong):
    with pytest.raises(ValueError, match=wrong):
        launch_processes(arguments, tmp_path)


def launched_parameters(arguments, tmp_path) -> dict:
    """The parameters the launch file passes to the node beside the params file."""
    [process] = launch_processes(arguments, tmp_path)
    files = [process.command[index + 1] for index, argument in enumerate(process.command)
             if argument == '--params-file'][1:]
    return {name: value for path in files
            for parameters in yaml.safe_load(Path(path).read_text()).values()
            for name, value in parameters['ros__parameters'].items()}


def test_the_cameras_argument_becomes_the_cameras_string_list(tmp_path):
    assert launched_parameters({'cameras': 'front, rear,,left'}, tmp_path)['cameras'] == [
        'front', 'rear', 'left']
    assert 'cameras' not in launched_parameters({}, tmp_path)


def wait_until(listener, condition: Callable[[], bool], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        rclpy.spin_once(listener, timeout_sec=0.05)
    return condition()


def test_one_launch_per_camera_with_namespace_name_sim_time_and_log_level(
        rclpy_context, start_process, tiny_model, tmp_path):
    rear_params = tmp_path / 'rear.yaml'
    rear_params.write_text('/**:\n  ros__parameters:\n    conf_threshold: 0.25\n')
    launches = {
        'front': {'namespace': '/robot1/front', 'engine_path': str(tiny_model)},
        'rear': {'namespace': 'robot1/rear', 'name': 'rear_detector', 'use_sim_time': 'true',
                 'log_level': 'debug', 'image': 'camera/image_raw',
                 'params_file': str(rear_params), 'engine_path': str(tiny_model)},
    }
    nodes = {}
    for camera, arguments in launches.items():
        [process] = launch_processes(arguments, tmp_path)
        assert not process.warnings
        nodes[camera] = start_process(process.command, camera, env=process.env)
    listener = rclpy.create_node('launch_listener')
    try:
        expected = {('human_detector', '/robot1/front'), ('rear_detector', '/robot1/rear')}
        assert wait_until(
            listener, lambda: expected <= set(listener.get_node_names_and_namespaces()),
            STARTUP_S), (listener.get_node_names_and_namespaces(), nodes['rear'].output())
        for topic, node_name in (('/robot1/front/image', 'human_detector'),
                                 ('/robot1/rear/camera/image_raw', 'rear_detector')):
            assert wait_until(listener, lambda: [
                info.node_name for info in listener.get_subscriptions_info_by_topic(topic)
            ] == [node_name], STARTUP_S), topic
        assert wait_until(
            listener, lambda: listener.get_publishers_info_by_topic('/robot1/rear/detections'),
            STARTUP_S)
        assert ros2_param_get(listener, '/robot1/rear/rear_detector', 'use_sim_time') is True
        assert ros2_param_get(listener, '/robot1/front/human_detector', 'use_sim_time') is False
        assert ros2_param_get(listener, '/robot1/rear/rear_detector',
                              'conf_threshold') == pytest.approx(0.25)
        assert ros2_param_get(listener, '/robot1/front/human_detector',
                              'conf_threshold') == pytest.approx(0.5)
    finally:
        listener.destroy_node()
    assert '[DEBUG]' in nodes['rear'].output()
    assert '[DEBUG]' not in nodes['front'].output()
    for node in nodes.values():
        assert node.stop() == 0, node.output()


def test_lifecycle_with_autostart_starts_the_managed_node_active(
        rclpy_context, start_process, tiny_model, tmp_path):
    [process] = launch_processes({'lifecycle': 'true', 'autostart': 'true',
                                  'namespace': '/managed', 'engine_path': str(tiny_model)},
                                 tmp_path)
    assert process.command[0].endswith('/human_detector_lifecycle')
    node = start_process(process.command, 'managed', env=process.env)
    listener = rclpy.create_node('launch_lifecycle_listener')
    try:
        assert wait_until(listener, lambda: listener.get_subscriptions_info_by_topic(
            '/managed/image'), STARTUP_S), node.output()
        assert ros2_lifecycle_get(listener, '/managed/human_detector') == 'active'
        assert ros2_lifecycle_set(listener, '/managed/human_detector', 'shutdown') is True
        assert ros2_lifecycle_get(listener, '/managed/human_detector') == 'finalized'
        assert wait_until(listener, lambda: not listener.get_subscriptions_info_by_topic(
            '/managed/image'), STARTUP_S)
    finally:
        listener.destroy_node()
    assert node.stop() == 0, node.output()
    assert 'Traceback' not in node.output()
