"""Make `ros2 run` find this package's executables in a pip-installed prefix.

pip puts console scripts in <prefix>/bin; ros2 run looks in <prefix>/lib/<package>/ (where
colcon's setup.cfg settings put them). Links the one to the other.
Usage: python link_ros_executables.py PREFIX
"""
from __future__ import annotations

import os
import sys
from importlib.metadata import distribution
from pathlib import Path

PACKAGE = 'human_detector_ros'


def link(prefix: Path) -> None:
    """Symlink <prefix>/lib/<package>/<name> -> <prefix>/bin/<name> for each console script."""
    target_dir = prefix / 'lib' / PACKAGE
    target_dir.mkdir(parents=True, exist_ok=True)
    for entry_point in distribution(PACKAGE).entry_points:
        if entry_point.group != 'console_scripts':
            continue
        link_path = target_dir / entry_point.name
        if link_path.is_symlink() or link_path.exists():
            link_path.unlink()
        os.symlink(prefix / 'bin' / entry_point.name, link_path)


if __name__ == '__main__':
    link(Path(sys.argv[1]))
