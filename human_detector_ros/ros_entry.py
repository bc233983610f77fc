"""Running a node as a program: clear startup errors, clean exit on Ctrl-C and SIGTERM."""
from __future__ import annotations

import sys
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from human_detector_ros.errors import HumanDetectorError


def run_node(make_node: Callable[[], Node], program: str,
             args: Optional[List[str]] = None) -> int:
    """Spin the node `make_node()` builds until shutdown; return the process exit code.

    A HumanDetectorError while building the node is a setup problem: its message goes to
    stderr, without a traceback, and the exit code is 1.
    """
    rclpy.init(args=args)
    # Made before the node: a signal during start-up invalidates the context, and an
    # executor created after that fails instead of returning.
    executor = SingleThreadedExecutor()
    try:
        node = make_node()
    except HumanDetectorError as error:
        print(f'{program}: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    except Exception:
        if rclpy.ok():
            raise
        return 0  # stopped by Ctrl-C or SIGTERM while starting
    try:
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
