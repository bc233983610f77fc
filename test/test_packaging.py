"""What a robot's install relies on: package manifest, installed share files, launch, config."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from importlib.metadata import distribution
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory

from human_detector_ros.ros.parameters import PARAMETERS
from human_detector_ros.ros.paths import installed_executable

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'config' / 'human_detector.yaml'


def test_package_xml_is_format_3_with_the_runtime_dependencies():
    manifest = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert manifest.get('format') == '3'
    assert manifest.findtext('name') == 'human_detector_ros'
    depends = {element.text for element in manifest
               if element.tag in ('depend', 'exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'vision_msgs', 'lifecycle_msgs',
            'python3-numpy', 'python3-opencv', 'launch', 'launch_ros'} <= depends
    assert manifest.findtext('export/build_type') == 'ament_python'


def test_share_directory_holds_launch_config_and_manifest():
    share = Path(get_package_share_directory('human_detector_ros'))
    for relative in ('package.xml', 'launch/detect.launch.py', 'config/human_detector.yaml',
                     'config/fastdds_large_images.xml'):
        assert (share / relative).is_file(), relative


def test_ros2_run_finds_every_program_of_the_package():
    programs = {entry_point.name for entry_point in distribution('human_detector_ros').entry_points
                if entry_point.group == 'console_scripts'}
    assert {'human_detector', 'human_detector_lifecycle', 'sample_camera'} <= programs
    for program in programs:
        assert Path(installed_executable(program)).is_file(), program


def test_config_lists_every_node_parameter_and_nothing_else():
    active = set(yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters'])
    # Lists that default to empty can only appear as commented examples.
    commented = set(re.findall(r'^\s*#\s*(\w+):', CONFIG.read_text(), re.MULTILINE))
    declared = {spec.name for spec in PARAMETERS}
    assert active <= declared
    assert declared <= active | commented
    empty_by_default = {spec.name for spec in PARAMETERS if spec.default is None}
    assert declared - active == empty_by_default


def test_config_defaults_equal_the_node_defaults():
    values = yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters']
    for spec in PARAMETERS:
        if spec.name in values:
            assert values[spec.name] == spec.default, spec.name
