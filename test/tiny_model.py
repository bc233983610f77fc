"""A tiny but real YOLOv8-shaped ONNX test model, so that node tests run ~1 ms per frame.

Input `images` [1, 3, 64, 64] float32 RGB in 0..1; output `output0` [1, 6, 84]: cx, cy, w, h in
network pixels and the sigmoided scores of classes 0 'a' and 1 'b', for the 8x8 + 4x4 + 2x2
cells of strides 8, 16 and 32, like a YOLOv8 head. Each cell's values come from its average
colour through a fixed 1x1 convolution: red areas score as 'a', green ones as 'b'.

With `fail_on_white`, an all-white network input (an all-white square frame) makes the model's
final Reshape ask for more elements than it has, so ONNX Runtime fails on that frame at run
time: a real engine fault that a test can trigger from outside the process.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
STRIDES = (8, 16, 32)
NAMES = "{0: 'a', 1: 'b'}"
CLASS_COUNT = 2
CHANNELS = 4 + CLASS_COUNT
ANCHORS = sum((SIZE // stride) ** 2 for stride in STRIDES)
OPSET = 17

# Rows: the conv's output channels (offset x, offset y, w, h, score a, score b);
# columns: input R, G, B. Scores: a = sigmoid(12 R - 6 G - 6 B - 2), b likewise for G.
_WEIGHTS = np.array([[2, -1, -1], [-1, 2, -1], [1, 1, 1], [1, 1, 1],
                     [12, -6, -6], [-6, 12, -6]], dtype=np.float32)
_BIASES = np.array([0, 0, -1, -1, -2, -2], dtype=np.float32)


def _constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node('Constant', [], [name], value=numpy_helper.from_array(array, name))


def _level(stride: int) -> List[onnx.NodeProto]:
    """Nodes of one level: pool to cells, 1x1 conv, sigmoid, to boxes in pixels, flatten."""
    cells = SIZE // stride
    grid_y, grid_x = np.mgrid[0:cells, 0:cells].astype(np.float32)
    offsets = np.zeros((1, CHANNELS, cells, cells), np.float32)
    offsets[0, 0], offsets[0, 1] = grid_x * stride, grid_y * stride
    scale = np.array([stride, stride, 4 * stride, 4 * stride, 1, 1],
                     np.float32).reshape(1, CHANNELS, 1, 1)
    p = f's{stride}_'
    return [
        helper.make_node('AveragePool', ['images'], [p + 'pooled'],
                         kernel_shape=[stride, stride], strides=[stride, stride]),
        _constant(p + 'w', _WEIGHTS.reshape(CHANNELS, 3, 1, 1)),
        _constant(p + 'b', _BIASES),
        helper.make_node('Conv', [p + 'pooled', p + 'w', p + 'b'], [p + 'logits']),
        helper.make_node('Sigmoid', [p + 'logits'], [p + 'unit']),
        _constant(p + 'scale', scale),
        helper.make_node('Mul', [p + 'unit', p + 'scale'], [p + 'scaled']),
        _constant(p + 'offsets', offsets),
        helper.make_node('Add', [p + 'scaled', p + 'offsets'], [p + 'boxes']),
        _constant(p + 'flat', np.array([1, CHANNELS, cells * cells], np.int64)),
        helper.make_node('Reshape', [p + 'boxes', p + 'flat'], [p + 'out']),
    ]


def _output_shape(fail_on_white: bool) -> List[onnx.NodeProto]:
    """Nodes computing `out_shape`: [1, 6, 84], or [1, 6, 85] for an all-white input."""
    nodes = [_constant('shape', np.array([1, CHANNELS, ANCHORS], np.int64))]
    if not fail_on_white:
        return nodes + [helper.make_node('Identity', ['shape'], ['out_shape'])]
    return nodes + [
        helper.make_node('ReduceMin', ['images'], ['darkest'], keepdims=0),
        helper.make_node('Floor', ['darkest'], ['all_white']),
        helper.make_node('Cast', ['all_white'], ['extra'], to=TensorProto.INT64),
        _constant('extra_shape', np.array([1], np.int64)),
        helper.make_node('Reshape', ['extra', 'extra_shape'], ['extra_1d']),
        _constant('zeros', np.zeros(2, np.int64)),
        helper.make_node('Concat', ['zeros', 'extra_1d'], ['delta'], axis=0),
        helper.make_node('Add', ['shape', 'delta'], ['out_shape']),
    ]


def build_tiny_model(path: Path, fail_on_white: bool = False) -> Path:
    """Write the test model to `path` (a name like tiny_test_model.onnx); return `path`."""
    nodes: List[onnx.NodeProto] = []
    for stride in STRIDES:
        nodes += _level(stride)
    nodes.append(helper.make_node('Concat', [f's{stride}_out' for stride in STRIDES],
                                  ['raw'], axis=2))
    nodes += _output_shape(fail_on_white)
    nodes.append(helper.make_node('Reshape', ['raw', 'out_shape'], ['output0']))
    graph = helper.make_graph(
        nodes, 'tiny_yolo_test_model',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT,
                                       [1, CHANNELS, ANCHORS])])
    model = helper.make_model(graph, producer_name='human_detector_ros tests',
                              opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = 8
    helper.set_model_props(model, {'names': NAMES, 'imgsz': f'[{SIZE}, {SIZE}]',
                                   'stride': str(max(STRIDES)),
                                   'description': 'tiny YOLO-shaped test model, not a detector'})
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path
