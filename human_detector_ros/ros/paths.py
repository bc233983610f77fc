"""Where this package's installed files are, as ros2 run and launch find them."""
from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_prefix, get_package_share_directory

PACKAGE = 'human_detector_ros'


def installed_executable(name: str) -> str:
    """Path of an executable as `ros2 run human_detector_ros <name>` finds it."""
    return str(Path(get_package_prefix(PACKAGE)) / 'lib' / PACKAGE / name)


def installed_config(name: str) -> str:
    """Path of a file in the installed share/human_detector_ros/config."""
    return str(Path(get_package_share_directory(PACKAGE)) / 'config' / name)
