"""The whole repository passes flake8 with the project's settings (setup.cfg, 99 columns)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8'], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout
