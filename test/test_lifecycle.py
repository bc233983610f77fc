"""The managed node (human_detector_lifecycle) driven as `ros2 lifecycle set` and Nav2's
lifecycle manager drive it: lifecycle_msgs services and the transition_event topic, over real
DDS, with the real default model on a real image.

One node process goes through every transition in order; each test continues where the
previous one left it. The process sees a bondpy stand-in (test/bondpy_standin: bondpy is not
on PyPI), which logs the bond the node makes on activate and breaks on deactivate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest
from lifecycle_msgs.msg import State, Transition, TransitionEvent

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.detection_client import DetectionClient
from human_detector_ros.ros.paths import installed_config, installed_executable
from ros_harness import (
    change_state, ros2_lifecycle_get, ros2_lifecycle_set, ros2_param_get, ros2_param_set,
    RosProcess)

NODE = '/lifecycle_detector'
IMAGE = '/lifecycle_test/camera/image'
STARTUP_S = 60.0
ANSWER_S = 60.0
QUIET_S = 3.0
BOND_STANDIN = Path(__file__).resolve().parent / 'bondpy_standin'
LOADED = ': ' + str(default_model_path())
"""End of the line the node logs once it loaded the default model."""


@pytest.fixture(scope='module')
def managed_node(rclpy_context, tmp_path_factory) -> Iterator[RosProcess]:
    log = tmp_path_factory.mktemp('lifecycle') / 'human_detector_lifecycle.log'
    process = RosProcess(
        [installed_executable('human_detector_lifecycle'), '--ros-args',
         '--params-file', installed_config('human_detector.yaml'),
         '-r', '__node:=lifecycle_detector', '-r', f'image:={IMAGE}'],
        log, env={'PYTHONPATH': str(BOND_STANDIN)})
    yield process
    assert process.stop() == 0, process.output()
    assert 'Traceback' not in process.output()


class Manager(DetectionClient):
    """Plays the lifecycle manager and the camera; records transition_event."""

    def __init__(self) -> None:
        super().__init__('lifecycle_test_manager', IMAGE)
        self.events: List[TransitionEvent] = []
        self.create_subscription(TransitionEvent, f'{NODE}/transition_event',
                                 self.events.append, 10)

    def set(self, label: str) -> bool:
        self.events.clear()
        return ros2_lifecycle_set(self, NODE, label)

    def went(self, *states: int) -> bool:
        """True once transition_event's newest goal states are these, in order. The events of
        the transition before may arrive after its ChangeState answer (`set` clears them), but
        never after this transition's own."""
        return self.spin_until(
            lambda: [event.goal_state.id for event in self.events][-len(states):] ==
            list(states), ANSWER_S)

    def quiet(self) -> bool:
        """Publish frames for QUIET_S; True if no detections came back."""
        self.detections.clear()
        self.detect(read_bgr(str(sample_image_path('camera.png'))), timeout_s=QUIET_S,
                    resend_after_s=0.5)
        return not self.detections


@pytest.fixture(scope='module')
def manager(managed_node) -> Iterator[Manager]:
    node = Manager()
    yield node
    node.destroy_node()


def test_starts_unconfigured_without_subscribing_or_loading(manager, managed_node):
    assert ros2_lifecycle_get(manager, NODE) == 'unconfigured', managed_node.output()
    assert manager.count_subscribers(IMAGE) == 0
    assert LOADED not in managed_node.output()


def test_a_transition_the_state_does_not_offer_is_refused_and_the_node_stays_up(
        manager, managed_node):
    assert change_state(manager, NODE, Transition(id=Transition.TRANSITION_ACTIVATE)) is False
    assert ros2_lifecycle_get(manager, NODE) == 'unconfigured'
    assert managed_node.process.poll() is None


def test_restart_parameters_and_live_parameters_are_settable_while_unconfigured(manager):
    for name, text in (('engine_path', '/no/such/model.onnx'), ('conf_threshold', '0.3'),
                       ('bond_heartbeat_period', '0.25')):
        result = ros2_param_set(manager, NODE, name, text)
        assert result.successful, (name, result.reason)
    assert ros2_param_get(manager, NODE, 'conf_threshold') == pytest.approx(0.3)


def test_a_bad_model_fails_configure_with_one_message_and_the_node_stays_unconfigured(
        manager, managed_node):
    assert manager.set('configure') is False
    assert manager.went(State.TRANSITION_STATE_CONFIGURING, State.PRIMARY_STATE_UNCONFIGURED)
    assert ros2_lifecycle_get(manager, NODE) == 'unconfigured'
    failures = [line for line in managed_node.output().splitlines()
                if 'configure failed' in line]
    assert len(failures) == 1, managed_node.output()
    assert '/no/such/model.onnx does not exist' in failures[0]
    assert managed_node.process.poll() is None
    assert 'Traceback' not in managed_node.output()


def test_configure_with_a_good_model_loads_it_and_stays_silent(manager, managed_node):
    assert ros2_param_set(manager, NODE, 'engine_path', str(default_model_path())).successful
    assert manager.set('configure') is True
    assert manager.went(State.TRANSITION_STATE_CONFIGURING, State.PRIMARY_STATE_INACTIVE)
    assert ros2_lifecycle_get(manager, NODE) == 'inactive'
    assert managed_node.output().count(LOADED) == 1
    assert manager.count_subscribers(IMAGE) == 0
    assert manager.quiet()


def test_while_inactive_live_parameters_apply_and_restart_ones_are_refused(manager):
    assert ros2_param_set(manager, NODE, 'conf_threshold', '0.5').successful
    result = ros2_param_set(manager, NODE, 'engine_path', '/other/model.onnx')
    assert not result.successful
    assert 'read at configure' in result.reason and 'cleanup' in result.reason
    assert ros2_param_get(manager, NODE, 'engine_path') == str(default_model_path())


def test_activate_bonds_subscribes_and_publishes_detections(manager, managed_node):
    assert manager.set('activate') is True
    assert manager.went(State.TRANSITION_STATE_ACTIVATING, State.PRIMARY_STATE_ACTIVE)
    assert manager.wait_for_detector(STARTUP_S)
    answer = manager.detect(read_bgr(str(sample_image_path('camera.png'))),
                            timeout_s=ANSWER_S)
    assert answer is not None, managed_node.output()
    assert len(answer[1].detections) >= 1
    assert manager.spin_until(lambda: manager.label_infos, ANSWER_S)
    assert manager.label_infos[-1].threshold == pytest.approx(0.5)
    assert ('bondpy stand-in: start topic=bond id=lifecycle_detector heartbeat_period=0.25 '
            'heartbeat_timeout=4.0') in managed_node.output()


def test_deactivate_stops_output_and_keeps_the_engine(manager, managed_node):
    assert manager.set('deactivate') is True
    assert manager.went(State.TRANSITION_STATE_DEACTIVATING, State.PRIMARY_STATE_INACTIVE)
    assert 'bondpy stand-in: break_bond id=lifecycle_detector' in managed_node.output()
    assert manager.spin_until(lambda: manager.count_subscribers(IMAGE) == 0, ANSWER_S)
    assert manager.quiet()
    assert manager.set('activate') is True
    assert manager.detect(read_bgr(str(sample_image_path('camera.png'))),
                          timeout_s=ANSWER_S) is not None
    assert managed_node.output().count(LOADED) == 1  # not loaded again
    assert ros2_param_set(manager, NODE, 'conf_threshold', '0.6').successful
    assert manager.spin_until(
        lambda: manager.label_infos[-1].threshold == pytest.approx(0.6), ANSWER_S)


def test_cleanup_frees_the_engine_and_configure_reads_restart_parameters_again(
        manager, managed_node):
    assert manager.set('deactivate') is True
    assert manager.set('cleanup') is True
    assert manager.went(State.TRANSITION_STATE_CLEANINGUP, State.PRIMARY_STATE_UNCONFIGURED)
    assert ros2_param_set(manager, NODE, 'device', 'cpu').successful
    assert manager.quiet()
    assert manager.set('configure') is True
    assert managed_node.output().count(LOADED) == 2


def test_shutdown_from_inactive_finalizes_and_the_process_still_stops_cleanly(
        manager, managed_node):
    assert manager.set('shutdown') is True
    assert manager.went(State.TRANSITION_STATE_SHUTTINGDOWN, State.PRIMARY_STATE_FINALIZED)
    assert ros2_lifecycle_get(manager, NODE) == 'finalized'
    assert managed_node.stop() == 0, managed_node.output()
