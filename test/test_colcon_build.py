"""A robot's workflow: colcon builds the package; its executable runs from install/."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
IGNORED = shutil.ignore_patterns('.venv*', '.git', 'build', 'install', 'log', 'out',
                                 '__pycache__', '.pytest_cache', '*.egg-info')


def run_in_workspace(workspace: Path, script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV))
    return subprocess.run(['bash', '-c', script], cwd=workspace, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


def test_colcon_builds_the_package_and_the_installed_node_runs(tmp_path):
    workspace = tmp_path / 'ws'
    shutil.copytree(ROOT, workspace / 'src' / 'human_detector_ros', ignore=IGNORED)
    build = run_in_workspace(
        workspace, f'{VENV}/bin/colcon build --executor sequential --event-handlers '
                   'console_direct-')
    assert build.returncode == 0, build.stdout
    installed = workspace / 'install'
    # The standalone vision_msgs must never shadow a robot's own.
    assert not (installed / 'vision_msgs').exists()
    prefix = installed / 'human_detector_ros'
    for relative in ('share/human_detector_ros/launch/detect.launch.py',
                     'share/human_detector_ros/config/human_detector.yaml',
                     'lib/human_detector_ros/human_detector'):
        assert (prefix / relative).exists(), relative

    where = run_in_workspace(
        workspace, f'. install/setup.sh && {VENV}/bin/python -c '
                   '"import human_detector_ros; print(human_detector_ros.__file__)"')
    assert str(installed) in where.stdout, where.stdout

    missing_model = tmp_path / 'missing.onnx'
    node = run_in_workspace(
        workspace, f'. install/setup.sh && install/human_detector_ros/lib/human_detector_ros/'
                   f'human_detector --ros-args -p engine_path:={missing_model}')
    assert node.returncode == 1, node.stdout
    assert str(missing_model) in node.stdout
    assert 'Traceback' not in node.stdout
