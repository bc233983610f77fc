"""Point the CMake files of PyPI's ROS 2 wheels at this environment's Python and numpy headers.

The wheels were built under /opt/python/cpXY-cpXY/ and their exported CMake targets still name
include directories there; CMake refuses targets whose include directories do not exist.
Usage: python fix_wheel_cmake_paths.py VENV
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_PYTHON = r'/opt/python/cp\d+-cp\d+'
REPLACEMENTS = (
    (re.compile(BUILD_PYTHON + r'/lib/python[\d.]+/site-packages/numpy/_core/include'),
     numpy.get_include()),
    (re.compile(BUILD_PYTHON + r'/include/python[\d.]+'), sysconfig.get_paths()['include']),
)


def fix(prefix: Path) -> int:
    """Rewrite the include paths in prefix/share/**/*.cmake; return how many files changed."""
    changed = 0
    for path in (prefix / 'share').rglob('*.cmake'):
        text = path.read_text()
        fixed = text
        for pattern, replacement in REPLACEMENTS:
            fixed = pattern.sub(replacement, fixed)
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    return changed


if __name__ == '__main__':
    print(f'fixed include paths in {fix(Path(sys.argv[1]))} CMake files')
