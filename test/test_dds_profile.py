"""The profile variable follows the Fast DDS generation installed beside rmw_fastrtps_cpp, and
the Fast DDS this environment loads really reads the file it names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from human_detector_ros.ros import dds_profile
from human_detector_ros.ros.dds_profile import (
    fast_dds_generation, large_image_environment, large_image_profile,
    LEGACY_PROFILE_VARIABLE, PROFILE_VARIABLE)

RMW_MARKER = Path('share/ament_index/resource_index/packages/rmw_fastrtps_cpp')


def ros_prefix(root: Path, library: Optional[str], with_rmw: bool = True) -> Path:
    """A ROS install prefix as /opt/ros/<distro> lays it out: lib/<library>, the ament index."""
    (root / 'lib').mkdir(parents=True)
    if library:
        (root / 'lib' / library).write_bytes(b'')
    if with_rmw:
        (root / RMW_MARKER).parent.mkdir(parents=True)
        (root / RMW_MARKER).write_text('')
    return root


@pytest.mark.parametrize('library, generation, variables', [
    ('libfastrtps.so.2.6.9', 2, [LEGACY_PROFILE_VARIABLE]),     # Humble
    ('libfastrtps.so.2.14.5', 2, [LEGACY_PROFILE_VARIABLE]),    # Jazzy
    ('libfastdds.so.3.2.2', 3, [PROFILE_VARIABLE]),             # Kilted
    (None, None, [PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE]),  # not found: both
])
def test_the_variable_is_the_one_the_installed_fast_dds_reads(
        tmp_path, library, generation, variables):
    environ = {'AMENT_PREFIX_PATH': str(ros_prefix(tmp_path / 'ros', library)),
               'ROS_DISTRO': 'kilted' if generation == 2 else 'jazzy'}  # ignored
    assert fast_dds_generation(environ) == generation
    assert large_image_environment(environ) == {
        name: large_image_profile() for name in variables}


def test_the_fast_dds_beside_the_rmw_wins_over_other_prefixes(tmp_path):
    overlay = ros_prefix(tmp_path / 'overlay', 'libfastdds.so.3.2.2', with_rmw=False)
    underlay = ros_prefix(tmp_path / 'underlay', 'libfastrtps.so.2.14.5')
    environ = {'AMENT_PREFIX_PATH': os.pathsep.join([str(overlay), str(underlay)])}
    assert fast_dds_generation(environ) == 2


def test_fast_dds_built_in_its_own_prefix_is_found_on_the_library_path(tmp_path):
    rmw = ros_prefix(tmp_path / 'install' / 'rmw_fastrtps_cpp', None)
    fastdds = ros_prefix(tmp_path / 'install' / 'fastdds', 'libfastdds.so.3.3.0',
                         with_rmw=False)
    environ = {'AMENT_PREFIX_PATH': str(rmw), 'LD_LIBRARY_PATH': str(fastdds / 'lib')}
    assert fast_dds_generation(environ) == 3


@pytest.mark.parametrize('variable', [PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE])
def test_a_profile_the_user_chose_is_kept(variable):
    assert large_image_environment({variable: '/my/profile.xml'}) == {}


def without_profile_variables() -> Dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if name not in (PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE)}


def test_this_environment_has_a_known_fast_dds_generation():
    assert fast_dds_generation(without_profile_variables()) in (2, 3)


def test_the_loaded_fast_dds_reads_the_profile_and_says_nothing_is_deprecated(
        tmp_path, monkeypatch):
    # A profile Fast DDS cannot parse: if it reads the file, it says so on stderr.
    unparsable = tmp_path / 'unparsable_profile.xml'
    unparsable.write_text('<dds><profiles><unclosed')
    monkeypatch.setattr(dds_profile, 'large_image_profile', lambda: str(unparsable))
    environ = without_profile_variables()
    environ.update(large_image_environment(environ))
    participant = ('import rclpy; rclpy.init(); node = rclpy.create_node("profile_probe"); '
                   'node.destroy_node(); rclpy.shutdown()')
    run = subprocess.run([sys.executable, '-c', participant], env=environ, timeout=120,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    assert run.returncode == 0, run.stdout
    assert f"Error parsing '{unparsable}'" in run.stdout, run.stdout
    assert 'deprecated' not in run.stdout, run.stdout
