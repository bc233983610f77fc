"""The core is a plain Python library: every module outside `ros/` imports without ROS."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'human_detector_ros'
CORE_MODULES = sorted(
    '.'.join(path.relative_to(ROOT).with_suffix('').parts).replace('.__init__', '')
    for path in PACKAGE.rglob('*.py') if 'ros' not in path.relative_to(PACKAGE).parts[:-1])

# A finder that refuses rclpy, every ROS message package and the ament index, as on a machine
# without ROS; importing any of them raises ModuleNotFoundError.
BLOCK_ROS = '''
import importlib.abc, sys
ROS = ('rclpy', 'rcl_interfaces', 'ament_index_python', 'builtin_interfaces', 'std_msgs',
       'sensor_msgs', 'vision_msgs', 'diagnostic_msgs', 'geometry_msgs', 'launch', 'launch_ros')
class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ROS:
            raise ModuleNotFoundError(f'No module named {name!r} (ROS blocked)', name=name)
        return None
sys.meta_path.insert(0, BlockRos())
'''


def test_core_module_list_covers_the_core_and_not_the_ros_layer():
    assert 'human_detector_ros.detector' in CORE_MODULES
    assert 'human_detector_ros.engines.tensorrt_engine' in CORE_MODULES
    assert not any(module.startswith('human_detector_ros.ros') for module in CORE_MODULES)


def test_every_core_module_imports_with_ros_unavailable():
    imports = '\n'.join(f'import {module}' for module in CORE_MODULES)
    check = BLOCK_ROS + '''
try:
    import rclpy
except ModuleNotFoundError:
    pass
else:
    raise SystemExit('the ROS block did not work')
''' + imports + "\nprint('imported', len(sys.modules))\n"
    result = subprocess.run([sys.executable, '-c', check], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'imported' in result.stdout
