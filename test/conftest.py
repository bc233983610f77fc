"""Shared fixtures: an isolated DDS domain per test run, rclpy in the test process, processes."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ros_harness import RosProcess

sys.path.insert(0, os.path.dirname(__file__))


# Set before any DDS participant exists: this run's processes see only each other.
os.environ['ROS_DOMAIN_ID'] = str(os.getpid() % 100 + 1)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


ROS_FIXTURES = {'rclpy_context', 'start_process'}
"""The fixtures of tests that run ROS: what --ros-only (the Jazzy tier) selects."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--ros-only', action='store_true',
                     help='run only the tests that run ROS (use rclpy_context or '
                          'start_process): the ROS 2 Jazzy tier of make test')


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if not config.getoption('--ros-only'):
        return
    chosen = [item for item in items if ROS_FIXTURES & set(getattr(item, 'fixturenames', ()))]
    config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
    items[:] = chosen


@pytest.fixture(scope='module')
def rclpy_context() -> Iterator[None]:
    """rclpy initialised for the test process, with the large-image DDS profile."""
    import rclpy
    from human_detector_ros.ros.dds_profile import large_image_environment
    os.environ.update(large_image_environment())
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., 'RosProcess']]:
    """Start child processes that are stopped (SIGINT) at the end of the test."""
    from ros_harness import RosProcess  # imports rclpy: only tests that start processes need it
    started: List[RosProcess] = []

    def start(command: List[str], name: str, env: Optional[Dict[str, Optional[str]]] = None
              ) -> RosProcess:
        process = RosProcess(command, tmp_path / f'{name}.log', env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory) -> Path:
    """The tiny YOLO-shaped test model (test/tiny_model.py): ~1 ms a frame."""
    pytest.importorskip('onnx')
    from tiny_model import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp('models') / 'tiny_test_model.onnx')


@pytest.fixture(scope='session')
def failing_tiny_model(tmp_path_factory) -> Path:
    """The tiny test model that fails at run time on an all-white frame."""
    pytest.importorskip('onnx')
    from tiny_model import build_tiny_model
    return build_tiny_model(
        tmp_path_factory.mktemp('models') / 'tiny_test_model_fails_on_white.onnx',
        fail_on_white=True)
