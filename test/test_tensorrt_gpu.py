"""The TensorRT engine's GPU path, through the GPU stand-in for TensorRT (CUDA only).

The GPU stand-in (test/tensorrt_standin/gpu.py) replaces only the `tensorrt` module: its plans
run a TorchScript module on the real GPU, reading and writing the addresses the engine binds,
on the stream the engine enqueues on, capturable in CUDA graphs. So everything of the TensorRT
GPU path runs for real here except TensorRT's own kernels: torch buffers bound by address,
enqueues on torch's current stream, the GPU-resident pipeline around the engine, its graphs
and its single synchronisation. Every test skips without a CUDA device for PyTorch.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest
import tensorrt_standin
from tensorrt_standin import gpu_plan_bytes

from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import load_engine
from human_detector_ros.engines.tensorrt_engine import TensorRTEngine
from human_detector_ros.errors import InferenceError
from human_detector_ros.gpu_pipeline import supports_torch_pipeline
from human_detector_ros.postprocess import NmsConfig

torch = pytest.importorskip('torch')
from test_gpu_pipeline import (  # noqa: E402
    _assert_close, _assert_equal, _export, _sample, CONFIGS, FRAMES, TinyYolo)

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device for PyTorch'),
    pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')]
VERSIONS = {'8.4': '8.4.3', '8.6': '8.6.1', '10': '10.3.0'}


@pytest.fixture(scope='module')
def tiny_path(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('tiny') / 'tiny.torchscript', TinyYolo(),
                   device='cuda')


@pytest.fixture(scope='module')
def half_path(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('half') / 'half.torchscript', TinyYolo(),
                   half=True, device='cuda')


def _plan(monkeypatch, tmp_path, model, version='10.3.0', **kwargs):
    """(the installed GPU stand-in, the path of a plan that runs `model` on the GPU)."""
    standin = tensorrt_standin.install(monkeypatch, version, real_cudart=True)
    path = tmp_path / 'model.engine'
    path.write_bytes(gpu_plan_bytes(str(model), version, **kwargs))
    return standin, path


def _images(seed=0, dtype=torch.float32):
    generator = torch.Generator(device='cuda').manual_seed(seed)
    return torch.rand((1, 3, 640, 640), generator=generator, device='cuda').to(dtype)


@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
@pytest.mark.parametrize('generation', sorted(VERSIONS))
def test_engine_on_torch_buffers_computes_the_module(monkeypatch, tmp_path, tiny_path,
                                                     generation, dynamic):
    version = VERSIONS[generation]
    standin, path = _plan(monkeypatch, tmp_path, tiny_path, version, dynamic=dynamic)
    module = torch.jit.load(str(tiny_path), map_location='cuda')
    with load_engine(path) as engine:
        assert isinstance(engine, TensorRTEngine) and engine.runs_torch
        bound = engine.torch_input()
        assert bound.is_cuda and tuple(bound.shape) == (1, 3, 640, 640)
        first_outputs = None
        for seed in range(3):
            images = _images(seed)
            outputs = engine.infer_torch(images)
            with torch.inference_mode():
                expected = module(images)
            torch.testing.assert_close(outputs['output0'], expected)
            if first_outputs is None:
                first_outputs = outputs['output0']
            # The same bound tensors every call: a captured graph stays valid.
            assert outputs['output0'].data_ptr() == first_outputs.data_ptr()
            assert engine.torch_input().data_ptr() == bound.data_ptr()
        host = engine.infer(_images(7).cpu().numpy())['output0']
        torch.testing.assert_close(torch.from_numpy(host), module(_images(7)).cpu())
    api = 'v2' if generation == '8.4' else 'v3'
    assert standin.trt.calls[f'execute_async_{api}'] == 4
    # Both tensors bound once, at load (the binding API passes its list with each enqueue).
    assert standin.trt.calls.get('set_tensor_address', 0) == (0 if api == 'v2' else 2)


def test_infer_torch_enqueues_on_the_current_stream_and_never_waits(
        monkeypatch, tmp_path, tiny_path):
    standin, path = _plan(monkeypatch, tmp_path, tiny_path)
    module = torch.jit.load(str(tiny_path), map_location='cuda')
    with load_engine(path) as engine:
        engine.infer_torch(_images())
        side = torch.cuda.Stream()
        images = _images(3)
        side.wait_stream(torch.cuda.current_stream())
        torch.cuda.set_sync_debug_mode('error')
        try:
            with torch.cuda.stream(side):
                source = engine.torch_input()
                source.copy_(images)
                outputs = engine.infer_torch(source)
                result = torch.empty_like(outputs['output0']).copy_(outputs['output0'])
        finally:
            torch.cuda.set_sync_debug_mode('default')
        assert standin.trt.streams[-1] == side.cuda_stream != 0
        side.synchronize()
        torch.testing.assert_close(result, module(images))


@pytest.mark.parametrize('resize_on', ['host', 'device'])
def test_auto_pipeline_runs_tensorrt_gpu_resident_in_graphs(
        monkeypatch, tmp_path, tiny_path, resize_on):
    standin, path = _plan(monkeypatch, tmp_path, tiny_path)
    ours = HumanDetector(path, device='cuda', resize_on=resize_on, conf_threshold=0.25)
    reference = HumanDetector(tiny_path, device='cuda', pipeline='torch', resize_on=resize_on,
                              conf_threshold=0.25)
    pipeline = ours.torch_pipeline
    assert ours.engine.backend == 'tensorrt' and pipeline is not None
    assert pipeline.input is ours.engine.torch_input()
    assert pipeline._batches[1].forward.graph is not None and \
        pipeline._batches[1].decode.graph is not None
    enqueues = dict(standin.trt.calls)
    for name, hw in FRAMES:
        frame = _sample(name, hw)
        for config in CONFIGS:
            ours.config = reference.config = config
            _assert_close(ours(frame), reference(frame))
        assert next(reversed(pipeline._stages.values())).letterbox.graph is not None
    # Every frame replayed the captured enqueue: TensorRT was not called again.
    assert standin.trt.calls == enqueues
    # The default thresholds settle within the fixed-size NMS (the low ones above can take
    # its exact fallback, which synchronizes): then a frame has no synchronising operation
    # but waiting for its result.
    ours.config = NmsConfig()
    frame = _sample('astronaut.png', (1080, 1920))
    first = ours(frame)
    fallbacks = pipeline.fallbacks
    torch.cuda.set_sync_debug_mode('error')
    try:
        again = [ours(frame) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert pipeline.fallbacks == fallbacks
    for detections in again:
        _assert_equal(detections, first)


@pytest.mark.parametrize('io_dtype', ['float32', 'float16'])
def test_half_module_behind_either_io_dtype(monkeypatch, tmp_path, half_path, io_dtype):
    _, path = _plan(monkeypatch, tmp_path, half_path, dtype=io_dtype)
    ours = HumanDetector(path, device='cuda', conf_threshold=0.25, resize_on='host')
    numpy_path = HumanDetector(path, device='cuda', pipeline='numpy', conf_threshold=0.25)
    assert ours.torch_pipeline.input.dtype == getattr(torch, io_dtype)
    for name, hw in FRAMES:
        frame = _sample(name, hw)
        _assert_close(ours(frame), numpy_path(frame), box_px=0.05, score=1e-3)


def test_uncapturable_engine_runs_eagerly_and_says_why(monkeypatch, tmp_path, tiny_path, caplog):
    standin, path = _plan(monkeypatch, tmp_path, tiny_path, capturable=False)
    ours = HumanDetector(path, device='cuda', conf_threshold=0.25, resize_on='host')
    reference = HumanDetector(tiny_path, device='cuda', pipeline='torch', resize_on='host',
                              conf_threshold=0.25)
    assert 'CUDA graph capture of the forward failed' in caplog.text
    assert 'cannot be captured' in caplog.text
    pipeline = ours.torch_pipeline
    assert pipeline._batches[1].forward.graph is None
    before = standin.trt.calls['execute_async_v3']
    frame = _sample('camera.png', (720, 1280))
    for _ in range(3):
        _assert_close(ours(frame), reference(frame))
    assert standin.trt.calls['execute_async_v3'] == before + 3
    assert set(list(standin.trt.streams)[-3:]) == {pipeline._stream.cuda_stream}


def test_steady_state_allocates_no_device_memory(monkeypatch, tmp_path, tiny_path):
    _, path = _plan(monkeypatch, tmp_path, tiny_path)
    detector = HumanDetector(path, device='cuda')
    frames = [_sample('camera.png', (1080, 1920)), _sample('astronaut.png', (1080, 1920))]
    for index in range(10):
        detector(frames[index % 2])
    # Engines and graphs of earlier tests may still await the garbage collector: free them
    # first, or their memory returning in the loop below looks like a change.
    gc.collect()
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    for index in range(50):
        detector(frames[index % 2])
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == allocated
    assert torch.cuda.memory_reserved() == reserved


def test_closed_engine_and_cuda_python_buffers_refuse_torch(monkeypatch, tmp_path, tiny_path):
    _, path = _plan(monkeypatch, tmp_path, tiny_path)
    engine = load_engine(path)
    engine.close()
    assert not engine.runs_torch
    with pytest.raises(InferenceError, match='closed'):
        engine.infer_torch(_images())
    pytest.importorskip('cuda.bindings.runtime', reason='needs cuda-python')
    with TensorRTEngine(path, 'cuda:0', buffers='cuda-python') as host_engine:
        assert not host_engine.runs_torch and host_engine.torch_input() is None
        module = torch.jit.load(str(tiny_path), map_location='cuda')
        result = host_engine.infer(_images(5).cpu().numpy())['output0']
        torch.testing.assert_close(torch.from_numpy(result), module(_images(5)).cpu())
        assert not supports_torch_pipeline(host_engine)


# --- the GPU stand-in itself must fail where TensorRT fails --------------------------------

class _Logger:
    def __init__(self, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.messages = []

            def log(self, severity, msg):
                self.messages.append((severity, msg))

        self.logger = Logger()


def _context(standin, tmp_path, model):
    trt = standin.trt
    logger = _Logger(trt).logger
    plan = gpu_plan_bytes(str(model), trt.__version__)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    return engine.create_execution_context(), logger


def test_standin_capture_needs_one_enqueue_first_and_device_addresses(monkeypatch, tmp_path,
                                                                      tiny_path):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0', real_cudart=True)
    context, logger = _context(standin, tmp_path, tiny_path)
    images, output = _images(1), torch.empty((1, 6, 1600), device='cuda')
    context.set_tensor_address('images', images.data_ptr())
    context.set_tensor_address('output0', output.data_ptr())
    stream = torch.cuda.Stream()
    with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=stream):
        refused = context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    assert not refused and 'enqueue once' in logger.messages[-1][1]
    with torch.cuda.stream(stream):
        assert context.execute_async_v3(stream.cuda_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    module = torch.jit.load(str(tiny_path), map_location='cuda')
    for seed in (2, 3):
        images.copy_(_images(seed))
        output.zero_()
        graph.replay()
        torch.testing.assert_close(output, module(images))
    host = np.zeros((1, 3, 640, 640), np.float32)
    context.set_tensor_address('images', host.ctypes.data)
    assert not context.execute_async_v3(stream.cuda_stream)
    assert 'illegal memory access' in logger.messages[-1][1]
    context.set_tensor_address('images', images.data_ptr())
    assert context.execute_async_v3(0)
    assert 'default stream' in logger.messages[-1][1]
