"""Shared fixtures: an isolated DDS domain per test run, rclpy in the test process, processes."""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, IO, Iterator, List, Optional, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ros_harness import RosProcess

sys.path.insert(0, os.path.dirname(__file__))


def lock_domain_id() -> IO[str]:
    """Lock a free ROS domain id (1-100) for this process's lifetime; returns the open lock
    file (the lock lasts while it is open, and the system releases it when the process dies).

    Each pytest process (each xdist worker) gets its own DDS domain, so that concurrent workers
    and concurrent runs on one machine never see each other's nodes."""
    folder = Path(tempfile.gettempdir()) / 'human_detector_ros_test_domains'
    folder.mkdir(exist_ok=True)
    for domain_id in range(1, 101):
        lock = open(folder / f'{domain_id}.lock', 'a')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        return lock
    raise RuntimeError(f'all ROS domain ids 1-100 are in use by test runs (locks in {folder})')


# Set before any DDS participant exists: this process's nodes see only each other.
DOMAIN_LOCK = lock_domain_id()
os.environ['ROS_DOMAIN_ID'] = Path(DOMAIN_LOCK.name).stem
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


ROS_FIXTURES = {'rclpy_context', 'start_process'}
"""The fixtures of tests that run ROS: what --ros-only (the Jazzy tier) selects."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--ros-only', action='store_true',
                     help='run only the tests that run ROS (use rclpy_context or '
                          'start_process): the ROS 2 Jazzy tier of make test')


LONGEST_FILES = [
    'test_ultralytics_parity.py', 'test_dds_hints.py', 'test_node_processes.py', 'test_soak.py',
    'test_engines_tensorrt_build.py', 'test_ros_tools.py', 'test_fuzz_input.py',
    'test_frame_pipeline.py', 'test_demo.py', 'test_batch.py', 'test_node_cameras.py',
    'test_node_dds.py', 'test_device_nms.py', 'test_torch_paths.py', 'test_lifecycle.py',
    'test_tracking_depth_dds.py', 'test_node_tensorrt_build.py', 'test_diagnostics.py',
    'test_gpu_pipeline.py', 'test_engines_tensorrt.py', 'test_detector.py', 'test_cli.py',
    'test_diagnostics_text.py', 'test_node_compressed_orientation.py', 'test_launch.py',
]
"""The test files that take longest, longest first (measured with --durations): they run
first, so that parallel workers (make test) do not end with one long file on one worker."""


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
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
