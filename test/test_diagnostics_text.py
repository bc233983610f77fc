"""Every /diagnostics message and value is one line, whatever text an engine failure or a bad
frame brings: the node in its own process with a test model that fails on white frames."""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from human_detector_ros.health import MAX_TEXT_CHARS
from human_detector_ros.ros.detection_client import DetectionClient
from ros_harness import DiagnosticsMonitor, deep_reliable_input, detector_command

STARTUP_S = 60.0
ANSWER_S = 30.0


def assert_one_line(status: DiagnosticStatus) -> None:
    texts = [status.message, status.hardware_id, status.name]
    texts += [text for kv in status.values for text in (kv.key, kv.value)]
    for text in texts:
        assert text == text.strip() and len(text) <= MAX_TEXT_CHARS, repr(text)
        assert all(character.isprintable() for character in text), repr(text)


def test_engine_failures_and_invalid_frames_give_one_line_diagnostics(
        rclpy_context, start_process, failing_tiny_model):
    topic = '/one_line/image'
    node = start_process(detector_command(
        '-r', '__node:=one_line_detector', '-r', f'image:={topic}',
        '-p', f'engine_path:={failing_tiny_model}', *deep_reliable_input(topic)), 'node')
    assert node.wait_for_output(str(failing_tiny_model), STARTUP_S), node.output()
    client = DetectionClient('one_line_client', topic)
    monitor = DiagnosticsMonitor(client, 'one_line_detector: pipeline')
    noise = np.random.default_rng(5).integers(0, 200, (48, 64, 3), np.uint8)
    white = np.full((64, 64, 3), 255, np.uint8)
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
        assert client.detect(noise, 'one_line_camera', ANSWER_S) is not None, node.output()
        # Frames that arrive while the engine is busy are superseded, not failed: send white
        # frames until enough failed in a row.
        error = None
        end = time.monotonic() + STARTUP_S
        while error is None and time.monotonic() < end:
            client.publish_frame(white, 'one_line_camera')
            error = monitor.wait_for(lambda s: s.level == DiagnosticStatus.ERROR, 0.5)
        assert error is not None, (monitor.values(), node.output()[-3000:])
        # onnxruntime's own text ends in a newline and names the failing node.
        assert 'Reshape' in error.message, error.message
        assert_one_line(error)

        bad = Image(header=Header(stamp=client.get_clock().now().to_msg()), height=2,
                    width=2, encoding='bgr8 with a note\n' + 'x' * 3000, step=6,
                    data=bytes(12))
        client.image_pub.publish(bad)
        invalid = monitor.wait_for(lambda s: any(
            kv.key == 'frames dropped (invalid image)' and kv.value == '1'
            for kv in s.values), ANSWER_S)
        assert invalid is not None, (monitor.values(), node.output()[-3000:])
        assert_one_line(invalid)
        assert 'unknown encoding' in monitor.values()['last error']
    finally:
        monitor.destroy()
        client.destroy_node()
    assert node.stop() == 0, node.output()[-3000:]
