"""Batches of frames of mixed sizes give every frame what the single-frame detector gives it.

For every backend (ONNX Runtime, TorchScript, TensorRT through the stand-in, and the torch
pipeline, which runs on the CPU here through torch and Triton's interpreter) and every output
layout: `detect_batch` of frames of different sizes equals `detector(frame)` for each frame;
on the CPU to the bit, on CUDA within 0.01 px with the same counts and classes.

The real default model runs with a dynamic batch (its ONNX export with the batch axis made
dynamic), a fixed batch of 2 (padded) and its own batch 1 (one call per frame); small traced
torch modules with a batch axis give the end-to-end and EfficientNMS layouts, exported to
ONNX for ONNX Runtime and the TensorRT stand-in.
"""
from __future__ import annotations

import json
import pathlib
from typing import Dict, List

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import load_engine
from human_detector_ros.engines.tensorrt_build import engine_for_onnx
from human_detector_ros.errors import InvalidImageError
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.postprocess import Detections, NmsConfig

import tensorrt_standin

torch = pytest.importorskip('torch')  # the Jazzy tier has no torch

from human_detector_ros import device_nms, gpu_pipeline  # noqa: E402
from network_inputs import OnnxThroughTorch  # noqa: E402
from test_gpu_pipeline import TinyYolo  # noqa: E402  [B, 3, 640, 640] -> [B, 6, 1600], raw
from triton_kernels import kernel_module  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    'ignore:`torch.jit.*deprecated:DeprecationWarning', 'ignore::torch.jit.TracerWarning',
    'ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning',
    'ignore:The feature will be removed:DeprecationWarning')
CUDA = torch.cuda.is_available()
NAMES = {0: 'Normal', 1: 'Fall'}
CONF = 0.05
SIZES = ((480, 640), (720, 1280), (300, 500))


# --- frames, models -----------------------------------------------------------------------

@pytest.fixture(scope='module')
def frames() -> List[np.ndarray]:
    """Three frames of people of three sizes (and aspect ratios)."""
    images = [read_bgr(str(sample_image_path(name)))
              for name in ('camera.png', 'astronaut.png', 'camera.png')]
    return [cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
            for image, hw in zip(images, SIZES)]


def batch_onnx(source: pathlib.Path, target: pathlib.Path, batch) -> pathlib.Path:
    """An Ultralytics ONNX export of batch 1 with batch `batch` (an int, or a name for a
    dynamic axis): its Reshape shapes take the batch from their input (0) instead of 1."""
    model = onnx.load(str(source))
    graph = model.graph
    shapes = {node.input[1] for node in graph.node if node.op_type == 'Reshape'}
    for index, tensor in enumerate(graph.initializer):
        if tensor.name in shapes:
            value = numpy_helper.to_array(tensor).copy()
            value[0] = 0
            graph.initializer[index].CopyFrom(numpy_helper.from_array(value, tensor.name))
    del graph.value_info[:]  # shapes inferred for batch 1
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        if isinstance(batch, int):
            dim.dim_value = batch
        else:
            dim.dim_param = batch
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> Dict[str, pathlib.Path]:
    """The default model: 'static1' as fetched, 'dynamic' batch and fixed batch 'static2'."""
    folder = tmp_path_factory.mktemp('batch_models')
    source = default_model_path()
    return {'static1': source,
            'dynamic': batch_onnx(source, folder / 'dynamic.onnx', 'batch'),
            'static2': batch_onnx(source, folder / 'static2.onnx', 2)}


@pytest.fixture(scope='module')
def reference(models, frames) -> List[Detections]:
    """The single-frame detector on the default model, frame by frame."""
    with HumanDetector(models['static1'], device='cpu', conf_threshold=CONF) as detector:
        return [detector(frame) for frame in frames]


def assert_same(ours: List[Detections], expected: List[Detections], cuda: bool = False
                ) -> None:
    assert len(ours) == len(expected)
    for index, (got, want) in enumerate(zip(ours, expected)):
        assert len(got) == len(want), f'frame {index}'
        np.testing.assert_array_equal(got.class_ids, want.class_ids, err_msg=f'frame {index}')
        if cuda:
            np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01, rtol=0)
        else:
            np.testing.assert_array_equal(got.boxes, want.boxes, err_msg=f'frame {index}')
            np.testing.assert_array_equal(got.scores, want.scores, err_msg=f'frame {index}')


def count_calls(detector: HumanDetector) -> List[int]:
    """Wraps the engine's `infer`; the list collects the batch of every call."""
    batches: List[int] = []
    infer = detector.engine.infer

    def counted(images):
        batches.append(images.shape[0])
        return infer(images)

    detector.engine.infer = counted
    return batches


# --- the real default model through ONNX Runtime --------------------------------------------

@pytest.mark.parametrize('model, max_batch, calls', [
    ('dynamic', 4, [3]),        # one call for the whole batch
    ('static2', 4, [2, 1]),     # the fixed batch 2: two calls, the second padded
    ('static1', 4, [1, 1, 1]),  # a batch-1 model: one call per frame
])
def test_onnxruntime_batches_equal_single_frames(models, frames, reference, model, max_batch,
                                                 calls):
    with HumanDetector(models[model], device='cpu', conf_threshold=CONF,
                       max_batch=max_batch) as detector:
        assert detector.engine.max_batch == {'dynamic': 4, 'static2': 2, 'static1': 1}[model]
        batches = count_calls(detector)
        assert_same(detector.detect_batch(frames), reference)
        assert batches == calls
    assert sum(len(found) for found in reference) > 0


def test_bad_frame_reports_its_index_and_runs_nothing(models, frames):
    with HumanDetector(models['static1'], device='cpu') as detector:
        batches = count_calls(detector)
        bad = [frames[0], np.zeros((10, 10), np.uint8), frames[2]]
        with pytest.raises(InvalidImageError, match='frame 1') as raised:
            detector.detect_batch(bad)
        assert raised.value.frame_index == 1 and batches == []
        assert detector.detect_batch([]) == []
        with pytest.raises(InvalidImageError) as single:
            detector(np.zeros((0, 4, 3), np.uint8))
        assert single.value.frame_index is None


# --- TensorRT through the stand-in --------------------------------------------------------

@pytest.fixture
def standin(monkeypatch):
    return tensorrt_standin.install(monkeypatch, '10.3.0')


def test_tensorrt_engine_built_with_a_batch_profile(standin, models, frames, reference,
                                                    tmp_path):
    """An ONNX model with a dynamic batch builds with the profile min 1, opt = max = max_batch
    (in the cache key), and runs each call at its own batch."""
    with HumanDetector(models['dynamic'], backend='tensorrt', device='cuda',
                       conf_threshold=CONF, max_batch=3,
                       tensorrt_cache_dir=tmp_path) as detector:
        assert detector.engine.max_batch == 3
        assert detector.engine.inputs[0].shape[0] == -1
        batches = count_calls(detector)
        assert_same(detector.detect_batch(frames), reference)
        assert_same(detector.detect_batch(frames[1:]), reference[1:])
        assert batches == [3, 2]
    (built,) = tmp_path.glob('*.engine')
    assert built.name.endswith('.fp16.b3.engine')
    plan = built.read_bytes()
    header = json.loads(plan[4:4 + int.from_bytes(plan[:4], 'little')])
    assert header['max_batch'] == 3
    profile = json.loads(plan[plan.index(b'PLAN\n') + 5:].split(b'\n')[0])['tensors'][0]
    assert profile['profile'] == [[1, 3, 640, 640], [3, 3, 640, 640], [3, 3, 640, 640]]
    # Another max_batch is another engine; the same one is taken from the cache.
    assert engine_for_onnx(models['dynamic'], 'cuda', 'fp16', tmp_path, max_batch=3) == built
    assert engine_for_onnx(models['dynamic'], 'cuda', 'fp16', tmp_path, max_batch=1) != built


def test_tensorrt_fixed_batch_engine_pads(standin, models, frames, reference, tmp_path):
    path = tmp_path / 'static2.engine'
    path.write_bytes(tensorrt_standin.plan_bytes(str(models['static1']), '10.3.0', batch=2))
    with HumanDetector(path, device='cuda', conf_threshold=CONF, max_batch=8) as detector:
        assert detector.engine.max_batch == 2
        batches = count_calls(detector)
        assert_same(detector.detect_batch(frames), reference)
        assert batches == [2, 1]


def test_tensorrt_binding_api_and_profile_min_above_one(monkeypatch, models, frames, reference,
                                                        tmp_path):
    """TensorRT 8.4 (binding API) with a profile whose min batch is 2: one frame runs padded."""
    tensorrt_standin.install(monkeypatch, '8.4.3')
    path = tmp_path / 'dynamic.engine'
    path.write_bytes(tensorrt_standin.plan_bytes(
        str(models['dynamic']), '8.4.3', dynamic=True,
        profile=[[2, 3, 640, 640], [4, 3, 640, 640], [4, 3, 640, 640]]))
    with HumanDetector(path, device='cuda', conf_threshold=CONF, max_batch=2) as detector:
        assert detector.engine.max_batch == 2
        assert_same(detector.detect_batch(frames[2:]), reference[2:])


# --- small traced modules: every output layout, every backend -------------------------------

class TinyEndToEnd(TinyYolo):
    """[B, 3, 640, 640] -> [B, 300, 6]: each image's 300 best rows."""

    def forward(self, x):
        raw = super().forward(x)
        scores, classes = raw[:, 4:].max(1)
        best = scores.topk(300, dim=1).indices
        picked = torch.gather(raw, 2, best[:, None].expand(-1, raw.shape[1], -1))
        xy, half = picked[:, :2].transpose(1, 2), picked[:, 2:4].transpose(1, 2) / 2
        return torch.cat((xy - half, xy + half, torch.gather(scores, 1, best)[..., None],
                          torch.gather(classes, 1, best)[..., None].float()), 2)


class TinyEfficientNms(TinyEndToEnd):
    """[B, 3, 640, 640] -> EfficientNMS outputs num_dets [B, 1], det_boxes [B, 100, 4],
    det_scores [B, 100], det_classes [B, 100]."""

    def forward(self, x):
        rows = super().forward(x)[:, :100]
        count = (rows[..., 4] > 0.2).sum(1, keepdim=True).int()
        return count, rows[..., :4], rows[..., 4], rows[..., 5].int()


class BatchOneOnly(TinyYolo):
    """A module that takes a batch but always answers for its first image (a batch-1 trace)."""

    def forward(self, x):
        return super().forward(x)[:1]


LAYOUTS = {'raw': TinyYolo, 'end_to_end': TinyEndToEnd, 'efficient_nms': TinyEfficientNms}
CONFIG = {'imgsz': [640, 640], 'stride': 32, 'task': 'detect', 'names': NAMES}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Dict[str, pathlib.Path]:
    """'<layout>.torchscript' and '<layout>.onnx' (dynamic batch) for every layout."""
    folder = tmp_path_factory.mktemp('tiny_batch')
    paths = {}
    example = torch.zeros((2, 3, 640, 640))
    for name, module_class in LAYOUTS.items():
        module = module_class().eval()
        traced = torch.jit.trace(module, example, strict=False)
        paths[f'{name}.torchscript'] = folder / f'{name}.torchscript'
        torch.jit.save(traced, str(paths[f'{name}.torchscript']),
                       _extra_files={'config.txt': json.dumps(CONFIG)})
        outputs = (['output0'] if name != 'efficient_nms' else
                   ['num_dets', 'det_boxes', 'det_scores', 'det_classes'])
        paths[f'{name}.onnx'] = folder / f'{name}.onnx'
        torch.onnx.export(module, example, str(paths[f'{name}.onnx']), input_names=['images'],
                          output_names=outputs, opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: 'batch'} for name in ['images'] + outputs})
        model = onnx.load(str(paths[f'{name}.onnx']))
        with torch.no_grad():
            results = module(example)
        results = results if isinstance(results, tuple) else (results,)
        # The exporter leaves some output dims unnamed; the detector needs them static.
        for value, result in zip(model.graph.output, results):
            for dim, size in zip(list(value.type.tensor_type.shape.dim)[1:], result.shape[1:]):
                dim.Clear()
                dim.dim_value = int(size)
        onnx.helper.set_model_props(model, {'names': str(NAMES), 'imgsz': '[640, 640]'})
        onnx.save(model, str(paths[f'{name}.onnx']))
    traced = torch.jit.trace(BatchOneOnly().eval(), example, strict=False)
    paths['batch_one.torchscript'] = folder / 'batch_one.torchscript'
    torch.jit.save(traced, str(paths['batch_one.torchscript']),
                   _extra_files={'config.txt': json.dumps(CONFIG)})
    return paths


def _single_and_batch(path, frames, **kwargs):
    """(each frame alone, detect_batch of all, the batch detector's engine call batches)."""
    with HumanDetector(path, device='cpu', conf_threshold=0.3, **kwargs) as single:
        expected = [single(frame) for frame in frames]
    with HumanDetector(path, device='cpu', conf_threshold=0.3, max_batch=4,
                       **kwargs) as detector:
        batches = count_calls(detector)
        return expected, detector.detect_batch(frames), batches


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
@pytest.mark.parametrize('backend', ['onnxruntime', 'torchscript'])
def test_every_layout_batched_on_the_host(tiny, frames, backend, layout):
    suffix = 'onnx' if backend == 'onnxruntime' else 'torchscript'
    expected, ours, batches = _single_and_batch(tiny[f'{layout}.{suffix}'], frames,
                                                pipeline='numpy')
    assert_same(ours, expected)
    assert batches == [3] and sum(len(found) for found in expected) > 0


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_every_layout_batched_through_the_tensorrt_standin(standin, tiny, frames, layout,
                                                           tmp_path):
    path = tmp_path / f'{layout}.engine'
    path.write_bytes(tensorrt_standin.ultralytics_engine_bytes(
        tensorrt_standin.plan_bytes(str(tiny[f'{layout}.onnx']), '10.3.0', dynamic=True,
                                    batch=4), {'names': NAMES, 'imgsz': [640, 640]}))
    with HumanDetector(tiny[f'{layout}.onnx'], device='cpu', conf_threshold=0.3) as single:
        expected = [single(frame) for frame in frames]
    with HumanDetector(path, device='cuda', conf_threshold=0.3, max_batch=4) as detector:
        assert detector.engine.max_batch == 4
        assert_same(detector.detect_batch(frames), expected)


def test_batch_one_torchscript_serves_a_batch_frame_by_frame(tiny, frames):
    expected, ours, batches = _single_and_batch(tiny['batch_one.torchscript'], frames)
    assert_same(ours, expected)
    assert batches == [1, 1, 1]


# --- the torch pipeline: letterbox per slot, one forward, NMS per batch ---------------------

@pytest.fixture(params=['torch-nms', 'triton-nms'])
def nms_kind(request, monkeypatch):
    """The torch pipeline's fixed-size NMS: the torch one, or the Triton kernels."""
    if request.param == 'torch-nms':
        monkeypatch.setattr(device_nms, 'triton_nms', lambda: None)
        return request.param
    kernels = kernel_module('device_nms_triton')
    if kernels is None:
        pytest.skip('Triton is not installed, or was imported before its interpreter')

    def triton(prediction, limits, capacity, rounds):
        assert prediction.dim() == 3  # the whole batch in one launch
        return kernels.fixed_size_nms(prediction, limits.conf, limits.iou, limits.class_offset,
                                      limits.class_mask, min(capacity, prediction.shape[2]),
                                      limits.scratch)

    monkeypatch.setattr(gpu_pipeline, 'fixed_size_nms', triton)
    return request.param


@pytest.fixture(scope='module')
def default_rows() -> Dict[bytes, Dict[str, np.ndarray]]:
    """Outputs of the default model by network input row, shared by the tests below."""
    return {}


@pytest.mark.parametrize('nms_kind, resize_on', [
    ('torch-nms', 'device'), ('torch-nms', 'host'), ('triton-nms', 'device')],
    indirect=['nms_kind'])
def test_torch_pipeline_batches_the_default_model(models, frames, reference, nms_kind,
                                                  resize_on, default_rows):
    """The default model (ONNX Runtime behind `infer_torch`, dynamic batch) through the torch
    pipeline: one forward for the batch, every frame's detections equal the numpy path's."""
    if nms_kind == 'triton-nms' and CUDA:
        pytest.skip('compiled Triton kernels take CUDA tensors only: '
                    'test_torch_pipeline_every_layout runs them on CUDA')
    inner = load_engine(models['dynamic'], device='cpu', max_batch=4)
    cache = default_rows

    def infer(images):
        # Rows already run (the same network input) are taken from the cache: the test is
        # about the batch plumbing, and each forward costs seconds here.
        missing = [i for i, row in enumerate(images) if row.tobytes() not in cache]
        if missing:
            computed = inner.infer(np.ascontiguousarray(images[missing]))
            for position, i in enumerate(missing):
                cache[images[i].tobytes()] = {name: value[position:position + 1]
                                              for name, value in computed.items()}
        rows = [cache[row.tobytes()] for row in images]
        return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}

    engine = OnnxThroughTorch(inner, infer)
    with HumanDetector(models['static1'], device='cpu', conf_threshold=CONF) as detector:
        detector.torch_pipeline = gpu_pipeline.TorchPipeline(
            engine, detector.layout, detector.postprocess, resize_on=resize_on)
        detector.max_batch = engine.max_batch
        batches = count_calls_torch(engine)
        ours = detector.detect_batch(frames)
        alone = [detector(frame) for frame in frames]
    assert_same(ours, reference)
    assert_same(alone, reference)
    assert batches[0] == 3 and set(batches[1:]) == {1}


def count_calls_torch(engine) -> List[int]:
    batches: List[int] = []
    infer_torch = engine.infer_torch

    def counted(images):
        batches.append(images.shape[0])
        return infer_torch(images)

    engine.infer_torch = counted
    return batches


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_torch_pipeline_every_layout(tiny, frames, layout, nms_kind):
    if layout != 'raw' and nms_kind != 'torch-nms':
        pytest.skip('the NMS kernels run for the raw layout only')
    device = 'cuda' if CUDA else 'cpu'
    path = tiny[f'{layout}.torchscript']
    with HumanDetector(path, device=device, conf_threshold=0.3, pipeline='numpy') as single:
        expected = [single(frame) for frame in frames]
    with HumanDetector(path, device=device, conf_threshold=0.3, pipeline='torch',
                       max_batch=4) as detector:
        assert detector.torch_pipeline is not None and detector.max_batch == 4
        ours = detector.detect_batch(frames)
        # Batch sizes 3, 2 and 1 (each its own graph on CUDA), then a frame alone again.
        assert_same(detector.detect_batch(frames[:2]), expected[:2], cuda=CUDA)
        assert_same([detector(frames[2])], expected[2:], cuda=CUDA)
        assert sorted(detector.torch_pipeline._batches) == [1, 2, 3]
    assert_same(ours, expected, cuda=CUDA)
    assert sum(len(found) for found in expected) > 0


def rewrite_outputs_in_place(engine) -> None:
    """Make `engine.infer_torch` return one output tensor per name and batch size, rewritten
    by every call, as a captured CUDA graph (or TensorRT's bound buffers) does."""
    infer_torch = engine.infer_torch
    kept: Dict = {}

    def rewriting(images):
        return {name: kept.setdefault((name, images.shape[0]), torch.empty_like(output))
                .copy_(output) for name, output in infer_torch(images).items()}

    engine.infer_torch = rewriting


@pytest.mark.parametrize('layout, capacity', [
    ('raw', device_nms.NMS_CAPACITY), ('raw', 2), ('end_to_end', device_nms.NMS_CAPACITY)],
    ids=['raw-fixed-size-nms', 'raw-exact-nms-fallback', 'end_to_end'])
def test_pipelined_batches_equal_batches_one_at_a_time(tiny, frames, layout, capacity):
    """`detect_batches` keeps a batch on the device while the host submits the next: the same
    detections as `detect_batch` batch by batch, also where the exact NMS fallback reads a
    batch's raw output after the next batch's forward (on CUDA: the same graph's output)."""
    device = 'cuda' if CUDA else 'cpu'
    # Consecutive batches of one size and other frames (3, 3): the second's forward rewrites
    # the first's graph output before the first is collected. An empty batch: nothing new.
    batches = [frames, frames[::-1], frames[1:], [], [frames[2]], frames[:2] + frames,
               frames[1:]]
    with HumanDetector(tiny[f'{layout}.torchscript'], device=device, conf_threshold=0.3,
                       pipeline='torch', max_batch=4) as detector:
        if not CUDA:
            rewrite_outputs_in_place(detector.engine)
        pipeline = detector.torch_pipeline = gpu_pipeline.TorchPipeline(
            detector.engine, detector.layout, detector.postprocess, nms_capacity=capacity)
        expected = [detector.detect_batch(batch) for batch in batches]
        fallbacks = pipeline.fallbacks
        in_flight_at_submit = []
        submit = pipeline.submit

        def counted(*args):
            in_flight_at_submit.append(sum(flight.submitted for flight in pipeline._in_flight))
            return submit(*args)

        pipeline.submit = counted
        pulled = []

        def source():
            for number, batch in enumerate(batches):
                pulled.append(number)
                yield batch

        pipelined, last_pulled = [], []
        for results in detector.detect_batches(source()):
            pipelined.append(results)
            last_pulled.append(pulled[-1])
        # Each result after the next batch's submission, the batch of 5 frames after both of
        # its calls; the empty batch yields what came before it, then itself, at once.
        assert last_pulled == [1, 2, 3, 3, 5, 6, 6]
        assert detector.last_timings.infer_ms > 0
    assert len(pipelined) == len(batches)
    for ours, theirs in zip(pipelined, expected):
        assert_same(ours, theirs)
    assert max(in_flight_at_submit) == 1 and len(in_flight_at_submit) == 7  # 5 frames: 2 calls
    if capacity == 2:
        assert pipeline.fallbacks > fallbacks


def test_pipelined_batches_beside_single_calls_bad_frames_and_new_configs(tiny, frames):
    with HumanDetector(tiny['end_to_end.torchscript'], device='cpu', pipeline='torch',
                       conf_threshold=0.3, max_batch=4) as detector:
        expected = [detector(frame) for frame in frames]
        # A frame alone between two results of an iteration.
        results = detector.detect_batches(iter([frames, frames[:2], frames]))
        assert_same(next(results), expected)
        assert_same([detector(frames[2])], expected[2:])
        assert_same(next(results), expected[:2])
        assert_same(next(results), expected)
        results = detector.detect_batches([frames, [frames[0], frames[1][..., 0]], frames])
        with pytest.raises(InvalidImageError) as raised:
            list(results)
        assert raised.value.frame_index == 1
        pipeline = detector.torch_pipeline
        assert not any(flight.submitted for flight in pipeline._in_flight)
        # A batch decodes with the config it was submitted with.
        transforms = [detector.checked_transform(frame) for frame in frames]
        strict = NmsConfig(conf_threshold=0.6)
        first = pipeline.submit(frames, transforms, strict, 0.0)
        second = pipeline.submit(frames, transforms, detector.config, 0.0)
        with pytest.raises(RuntimeError, match='in flight'):
            pipeline.submit(frames, transforms, detector.config, 0.0)
        assert_same(pipeline.collect(second), expected)
        ours = pipeline.collect(first)
        with pytest.raises(RuntimeError, match='collected already'):
            pipeline.collect(first)
        detector.config = strict
        assert_same(ours, [detector(frame) for frame in frames])
        assert sum(map(len, ours)) < sum(map(len, expected))


@pytest.mark.skipif(not CUDA, reason='no CUDA device for PyTorch')
@pytest.mark.parametrize('dynamic', [True, False], ids=['dynamic-batch', 'fixed-batch-2'])
def test_tensorrt_gpu_standin_batches_through_the_torch_pipeline(monkeypatch, tiny, frames,
                                                                 tmp_path, dynamic):
    """TensorRT on the GPU (the GPU stand-in runs the module on the bound device buffers):
    a dynamic batch profile, or a fixed batch of 2 padded, with a CUDA graph per batch size."""
    tensorrt_standin.install(monkeypatch, '10.3.0', real_cudart=True)
    torchscript = tiny['raw.torchscript']
    path = tmp_path / 'raw.engine'
    path.write_bytes(tensorrt_standin.ultralytics_engine_bytes(
        tensorrt_standin.gpu_plan_bytes(str(torchscript), '10.3.0', dynamic=dynamic,
                                        batch=4 if dynamic else 2),
        {'names': NAMES, 'imgsz': [640, 640]}))
    with HumanDetector(torchscript, device='cuda', conf_threshold=0.3,
                       pipeline='numpy') as single:
        expected = [single(frame) for frame in frames]
    with HumanDetector(path, device='cuda', conf_threshold=0.3, max_batch=4) as detector:
        assert detector.torch_pipeline is not None
        assert detector.max_batch == (4 if dynamic else 2)
        assert_same(detector.detect_batch(frames), expected, cuda=True)
        assert_same(detector.detect_batch(frames[:2]), expected[:2], cuda=True)
        assert_same([detector(frames[2])], expected[2:], cuda=True)
        assert all(batch.forward.graph is not None
                   for batch in detector.torch_pipeline._batches.values())


def test_parameters_describe_max_batch_and_backends():
    pytest.importorskip('rcl_interfaces', reason='the node parameters need ROS')
    from human_detector_ros.engines import BACKENDS, REGISTRY
    from human_detector_ros.ros.parameters import PARAMETERS

    specs = {spec.name: spec for spec in PARAMETERS}
    assert specs['max_batch'].read_only and specs['max_batch'].default == 0
    assert all(name in specs['backend'].description for name in REGISTRY)
    assert BACKENDS == tuple(REGISTRY)
