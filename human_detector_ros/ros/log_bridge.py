"""The core's Python `logging` records shown through a node's ROS logger (console, /rosout)."""
from __future__ import annotations

import logging
from typing import Any

CORE_LOGGER = 'human_detector_ros'


class RosLogHandler(logging.Handler):
    """Forwards each record to an rclpy logger at the matching severity."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(message)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(message)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(message)
            else:
                self.ros_logger.debug(message)
        except Exception:  # logging must never break the caller
            self.handleError(record)


def forward_core_logs(ros_logger: Any) -> None:
    """Send INFO and above of the package's core modules (engine builds, backend warnings)
    to `ros_logger` instead of Python's stderr fallback; replaces an earlier forwarding."""
    core = logging.getLogger(CORE_LOGGER)
    for handler in [h for h in core.handlers if isinstance(h, RosLogHandler)]:
        core.removeHandler(handler)
    core.addHandler(RosLogHandler(ros_logger))
    core.setLevel(logging.INFO)
