"""The node over real DDS with `engine_path:=<model.onnx>` and `backend:=tensorrt`.

The node process gets the stand-in TensorRT and CUDA runtime (test/tensorrt_standin/child on
its PYTHONPATH): it builds the engine from the real default ONNX model with the stand-in
builder, caches it, and detects people in a real image with it; a second start reuses it.
"""
from __future__ import annotations

import os
from typing import List

from vision_msgs.msg import Detection2DArray

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.ros.detection_client import DetectionClient
from ros_harness import detector_command
from tensorrt_standin import CHILD_PATH

STARTUP_S = 90.0


def _standin_env():
    return {'PYTHONPATH': os.pathsep.join(filter(None, [CHILD_PATH,
                                                        os.environ.get('PYTHONPATH')])),
            'TENSORRT_STANDIN_VERSION': '10.3.0'}


def _detect_once(node, namespace: str) -> Detection2DArray:
    client = DetectionClient(f'{namespace}_client', f'/{namespace}/image')
    received: List[Detection2DArray] = []
    client.create_subscription(Detection2DArray, f'/{namespace}/detections', received.append,
                               10)
    frame = read_bgr(str(sample_image_path('camera.png')))
    try:
        assert client.wait_for_detector(STARTUP_S), node.output()
        for _ in range(15):
            client.publish_frame(frame, 'trt_camera')
            if client.spin_until(lambda: received, 4.0):
                break
    finally:
        client.destroy_node()
    assert received, node.output()
    return received[0]


def test_node_builds_the_engine_from_onnx_then_reuses_it(rclpy_context, start_process,
                                                         tmp_path):
    cache = tmp_path / 'engines'
    arguments = ('-p', f'engine_path:={default_model_path()}', '-p', 'backend:=tensorrt',
                 '-p', 'tensorrt_precision:=fp32', '-p', f'tensorrt_cache_dir:={cache}')
    for start, text in enumerate(('Building a TensorRT engine from', 'Using the cached')):
        namespace = f'trt_build_{start}'
        node = start_process(detector_command(*arguments, '-r', f'__ns:=/{namespace}'),
                             f'node{start}', _standin_env())
        msg = _detect_once(node, namespace)
        assert msg.header.frame_id == 'trt_camera'
        assert [d.results[0].hypothesis.class_id for d in msg.detections] == ['0']
        output = node.output()
        # Through the node's ROS logger, not Python's stderr fallback.
        assert f'{namespace}.human_detector]: {text}' in output, output
        assert ('Built the TensorRT engine in' in output) == (start == 0), output
        engines = sorted(cache.iterdir())
        assert len(engines) == 1 and engines[0].name.endswith('.fp32.b1.engine')
        assert f'tensorrt on cuda:0: {engines[0]}' in output, output
        assert node.stop() == 0, output


def test_node_with_a_broken_onnx_exits_with_one_clear_message(start_process, tmp_path):
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'\x08\x07\x12\x07pytorch' + b'\x00' * 100)
    node = start_process(detector_command('-p', f'engine_path:={broken}',
                                          '-p', 'backend:=tensorrt',
                                          '-p', f'tensorrt_cache_dir:={tmp_path / "cache"}'),
                         'node', _standin_env())
    assert node.process.wait(timeout=STARTUP_S) == 1, node.output()
    output = node.output()
    assert f'cannot build an engine from {broken}' in output, output
    assert 'ONNX parser rejected the model' in output and 'Traceback' not in output
    assert not (tmp_path / 'cache').exists() or not any((tmp_path / 'cache').iterdir())
