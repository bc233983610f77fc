"""Running a node as a program: clear startup errors, clean exit on Ctrl-C and SIGTERM.

The console scripts live here, in a module that imports nothing heavy: they install the stop
handlers first and only then import rclpy and the node (about 0.6 s), so that Ctrl-C or
SIGTERM at any moment of startup ends the program with exit code 0 and no traceback.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Any, List, Optional

NODE_CLASSES = {
    'human_detector': 'human_detector_ros.ros.node:HumanDetectorNode',
    'human_detector_lifecycle': 'human_detector_ros.ros.node:ManagedHumanDetectorNode',
    'sample_camera': 'human_detector_ros.ros.sample_camera:SampleCamera',
}
"""program name -> 'module:class' of the node it runs."""

SPIN_PERIOD_S = 0.1


def human_detector(args: Optional[List[str]] = None) -> int:
    """`ros2 run human_detector_ros human_detector`; returns the exit code."""
    return run_program('human_detector', args)


def human_detector_lifecycle(args: Optional[List[str]] = None) -> int:
    """`ros2 run human_detector_ros human_detector_lifecycle`, the managed node; returns the
    exit code."""
    return run_program('human_detector_lifecycle', args)


def sample_camera(args: Optional[List[str]] = None) -> int:
    """`ros2 run human_detector_ros sample_camera`; returns the exit code."""
    return run_program('sample_camera', args)


def run_program(program: str, args: Optional[List[str]] = None) -> int:
    """Spin the node of `program` (NODE_CLASSES) until SIGINT/SIGTERM; return the exit code.

    The signals only ask the program to stop: rclpy's own handlers would shut the context
    down first, and destroying a node after that can crash the process. A signal that comes
    while modules load or the node is built is honoured as soon as that step ends. An error
    while building the node (ours, or rclpy's for a parameter it rejects) is a setup problem:
    its message goes to stderr, without a traceback, and the exit code is 1.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, request_stop)
    module_name, class_name = NODE_CLASSES[program].split(':')
    node_class = getattr(importlib.import_module(module_name), class_name)
    return 0 if stop.is_set() else _spin(node_class, program, args, stop)


def _spin(node_class: Any, program: str, args: Optional[List[str]],
          stop: threading.Event) -> int:
    # Imported here, after the stop handlers are in place (see the module docstring).
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from human_detector_ros.errors import HumanDetectorError
    try:
        from rclpy.signals import SignalHandlerOptions
        init_options = {'signal_handler_options': SignalHandlerOptions.NO}
    except ImportError:  # an rclpy without the option keeps its own handlers
        init_options = {}

    try:
        rclpy.init(args=args, **init_options)
    except Exception as error:  # rclpy raises its internal RCLError for bad --ros-args
        print(f'{program}: cannot start ROS: {error}. Check the --ros-args given, and the '
              'syntax of any --params-file.', file=sys.stderr)
        return 1
    try:
        node = node_class()
    except (HumanDetectorError, ParameterException, RuntimeError) as error:
        # RuntimeError: rclpy's own errors for values it rejects itself (QoS overrides).
        print(f'{program}: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
