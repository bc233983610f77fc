"""The node's transport hints over real DDS: the wait for a first frame counts from the
publisher match, and frames the transport loses are counted, shown and explained.

Losses are made deterministic on the writer's side: the camera publishes bursts through a
Fast DDS flow controller that sends one sample a second from a keep-last-1 history, so the
samples it replaces are never sent and the node's reader sees gaps in the sequence numbers,
exactly as it does when fragments of large frames are dropped (measured here: Fast DDS 3.2 and
2.14 report both through the message-lost event).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node

from human_detector_ros.health import LOSS_WARN_MIN_FRAMES
from human_detector_ros.ros.dds_profile import (
    LEGACY_PROFILE_VARIABLE, PROFILE_VARIABLE, profile_environment)
from human_detector_ros.ros.detection_client import DetectionClient
from ros_harness import DiagnosticsMonitor, detector_command

STARTUP_S = 60.0
ANSWER_S = 30.0
HINT = 'fastdds_large_images.xml'


def with_stand_in(folder: str) -> Dict[str, str]:
    """Environment for a node process that imports test/<folder>/sitecustomize.py first."""
    paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    return {'PYTHONPATH': os.pathsep.join([str(Path(__file__).parent / folder)] + paths)}


EVENT_SOURCES = {
    'matched event': {},
    'Humble: polled': with_stand_in('humble_events'),
}

ONE_SAMPLE_A_SECOND = '''<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <participant profile_name="slow_participant" is_default_profile="true">
      <rtps>
        <flow_controller_descriptor_list>
          <flow_controller_descriptor>
            <name>one_sample_a_second</name>
            <scheduler>FIFO</scheduler>
            <max_bytes_per_period>12000</max_bytes_per_period>
            <period_ms>1000</period_ms>
          </flow_controller_descriptor>
        </flow_controller_descriptor_list>
      </rtps>
    </participant>
    <data_writer profile_name="slow_writer" is_default_profile="true">
      <qos>
        <publishMode>
          <kind>ASYNCHRONOUS</kind>
          <flow_controller_name>one_sample_a_second</flow_controller_name>
        </publishMode>
      </qos>
    </data_writer>
  </profiles>
</dds>
'''

# Bursts of 10 small frames (64x48 bgr8, 9 KB: one fits the flow controller's period) every
# 1.5 s on the topic argv[1], best effort, keep last 1.
BURST_CAMERA = '''
import sys
import time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from human_detector_ros.ros.messages import bgr_to_image_msg

rclpy.init()
node = rclpy.create_node('burst_camera')
publisher = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
frame = np.random.default_rng(1).integers(0, 200, (48, 64, 3), np.uint8)
try:
    while rclpy.ok():
        for _ in range(10):
            try:
                publisher.publish(bgr_to_image_msg(
                    frame, Header(stamp=node.get_clock().now().to_msg(), frame_id='burst')))
            except Exception:  # the flow-controlled writer may refuse a sample: a loss too
                pass
        time.sleep(1.5)
except KeyboardInterrupt:
    pass
'''


def values_of(status: DiagnosticStatus) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def listener(rclpy_context) -> Iterator[Node]:
    node = rclpy.create_node('hints_listener')
    yield node
    node.destroy_node()


def test_lost_frames_are_shown_in_diagnostics_and_the_node_names_the_profile(
        listener, start_process, tiny_model, tmp_path):
    node = start_process(detector_command(
        '-r', '__node:=lossy_detector', '-r', 'image:=/lossy/image',
        '-p', f'engine_path:={tiny_model}'), 'node')
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    writer_profile = tmp_path / 'one_sample_a_second.xml'
    writer_profile.write_text(ONE_SAMPLE_A_SECOND)
    camera_env = {PROFILE_VARIABLE: None, LEGACY_PROFILE_VARIABLE: None,
                  'RMW_FASTRTPS_PUBLICATION_MODE': 'AUTO'}  # AUTO: the XML's publish mode
    camera_env.update(profile_environment(str(writer_profile)))
    start_process([sys.executable, '-c', BURST_CAMERA, '/lossy/image'], 'camera',
                  env=camera_env)
    monitor = DiagnosticsMonitor(listener, 'lossy_detector: pipeline')

    warn = monitor.wait_for(lambda s: s.level == DiagnosticStatus.WARN and
                            'lost in transport' in s.message, STARTUP_S)
    assert warn is not None, (monitor.values(), node.output()[-3000:])
    values = values_of(warn)
    assert int(values['frames lost in transport']) >= LOSS_WARN_MIN_FRAMES, values
    assert int(values['frames received']) >= 1, values
    # The matched event and the frames are separate callbacks: wait for the count, not a
    # snapshot of it.
    matched = monitor.wait_for(lambda s: values_of(s)['image publishers'] == '1', STARTUP_S)
    assert matched is not None, monitor.values()
    assert node.wait_for_output('lost in transport', STARTUP_S), node.output()[-3000:]
    hint = next(line for line in node.output().splitlines() if 'lost in transport' in line)
    assert '/lossy/image' in hint and HINT in hint, hint
    assert node.process.poll() is None, node.output()[-3000:]


@pytest.mark.parametrize('events', sorted(EVENT_SOURCES))
def test_no_profile_hint_when_a_late_camera_delivers_soon_after_it_is_matched(
        listener, start_process, tiny_model, events):
    warn_s = 15.0  # the camera's first answer must come well within this, even under load
    node = start_process(detector_command(
        '-r', '__node:=late_detector', '-r', 'image:=/late/image',
        '-p', f'engine_path:={tiny_model}', '-p', f'no_image_warn_s:={warn_s}'), 'node',
        env=EVENT_SOURCES[events])
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    monitor = DiagnosticsMonitor(listener, 'late_detector: pipeline')
    # Discovery of the camera is slow: it is matched long after the node started.
    long_up = monitor.wait_for(
        lambda s: float(values_of(s)['seconds since last image']) > warn_s + 1.0, STARTUP_S)
    assert long_up is not None, (monitor.values(), node.output())
    client = DetectionClient('late_camera', '/late/image')
    frame = np.random.default_rng(2).integers(0, 200, (48, 64, 3), np.uint8)
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
        # It takes a while after the match before the first frame: well within warn_s.
        client.spin_until(lambda: False, 2.0)
        assert client.detect(frame, 'late_camera', ANSWER_S) is not None, node.output()
        after = monitor.wait_for(lambda s: values_of(s)['image publishers'] == '1', STARTUP_S)
    finally:
        client.destroy_node()
    assert HINT not in node.output(), node.output()
    assert values_of(long_up)['image publishers'] == '0'
    assert after is not None, monitor.values()


@pytest.mark.parametrize('events', sorted(EVENT_SOURCES))
def test_a_matched_camera_whose_frames_never_arrive_gets_the_hint(
        listener, start_process, tiny_model, events):
    warn_s = 2.0
    node = start_process(detector_command(
        '-r', '__node:=silent_detector', '-r', 'image:=/silent/image',
        '-p', f'engine_path:={tiny_model}', '-p', f'no_image_warn_s:={warn_s}'), 'node',
        env=EVENT_SOURCES[events])
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    monitor = DiagnosticsMonitor(listener, 'silent_detector: pipeline')
    up = monitor.wait_for(
        lambda s: float(values_of(s)['seconds since last image']) > warn_s + 1.0, STARTUP_S)
    assert up is not None, (monitor.values(), node.output())
    assert HINT not in node.output(), node.output()  # no camera yet: nothing to explain
    camera = DetectionClient('silent_camera', '/silent/image')
    try:
        assert camera.wait_for_detector(STARTUP_S), node.output()
        # The camera is matched and publishes nothing: as when every frame is lost.
        assert node.wait_for_output(HINT, STARTUP_S), node.output()
        matched = monitor.wait_for(
            lambda s: values_of(s)['image publishers'] == '1', STARTUP_S)
        assert matched is not None, monitor.values()
    finally:
        camera.destroy_node()
    hint = next(line for line in node.output().splitlines() if HINT in line)
    assert '/silent/image' in hint and 'no frame has arrived' in hint, hint


def test_a_middleware_without_lost_or_matched_events_still_runs_the_node(
        listener, start_process, tiny_model):
    node = start_process(detector_command(
        '-r', '__node:=plain_detector', '-r', 'image:=/plain/image',
        '-p', f'engine_path:={tiny_model}'), 'node', env=with_stand_in('rmw_without_events'))
    assert node.wait_for_output(str(tiny_model), STARTUP_S), node.output()
    monitor = DiagnosticsMonitor(listener, 'plain_detector: pipeline')
    client = DetectionClient('plain_camera', '/plain/image')
    frame = np.random.default_rng(3).integers(0, 200, (48, 64, 3), np.uint8)
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
        assert client.detect(frame, 'plain_camera', ANSWER_S) is not None, node.output()
        status = monitor.wait_for(
            lambda s: values_of(s)['image publishers'] == '1', STARTUP_S)
    finally:
        client.destroy_node()
    assert status is not None, monitor.values()
    assert values_of(status)['frames lost in transport'] == 'n/a', values_of(status)
    assert 'Traceback' not in node.output(), node.output()
