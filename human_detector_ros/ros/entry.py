"""Running a node as a program: clear startup errors, clean exit on Ctrl-C and SIGTERM."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, List, Optional

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from human_detector_ros.errors import HumanDetectorError

try:
    from rclpy.signals import SignalHandlerOptions
    INIT_OPTIONS = {'signal_handler_options': SignalHandlerOptions.NO}
except ImportError:  # an rclpy without the option keeps its own handlers
    INIT_OPTIONS = {}

SPIN_PERIOD_S = 0.1


def run_node(make_node: Callable[[], Node], program: str,
             args: Optional[List[str]] = None) -> int:
    """Spin the node `make_node()` builds until SIGINT/SIGTERM; return the exit code.

    The signals only ask the spin loop to stop: rclpy's own handlers would shut the context
    down first, and destroying a node after that can crash the process. An error while building
    the node (ours, or rclpy's for a parameter it rejects) is a setup problem: its message goes
    to stderr, without a traceback, and the exit code is 1.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, request_stop)
    try:
        rclpy.init(args=args, **INIT_OPTIONS)
    except Exception as error:  # rclpy raises its internal RCLError for bad --ros-args
        print(f'{program}: cannot start ROS: {error}. Check the --ros-args given, and the '
              'syntax of any --params-file.', file=sys.stderr)
        return 1
    try:
        node = make_node()
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
