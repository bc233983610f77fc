"""The torch pipeline (gpu_pipeline) gives the numpy pipeline's detections, on CPU and CUDA.

Without a GPU the torch pipeline runs on a CPU torch device (no pinned memory, streams or
graphs); the CUDA cases skip here and run on a machine with a GPU.
"""
from __future__ import annotations

import gc
import json
import pathlib
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from network_inputs import OnnxThroughTorch

from human_detector_ros import assets
from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import InvalidImageError, ModelLoadError
from human_detector_ros.letterbox import to_network_input
from human_detector_ros.postprocess import NmsConfig, OutputLayout

torch = pytest.importorskip('torch')
from torch import nn  # noqa: E402

from human_detector_ros.gpu_pipeline import (  # noqa: E402
    KEPT_SOURCE_SIZES, regular_rows, RowCopy, TorchPipeline)

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')
ROOT = pathlib.Path(__file__).resolve().parent.parent
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device for PyTorch')
DEVICES = ['cpu', pytest.param('cuda', marks=CUDA)]
NAMES = {'0': 'Normal', '1': 'Fall'}
CONFIGS = [NmsConfig(0.25, 0.45), NmsConfig(0.1, 0.7, agnostic=True),
           NmsConfig(0.2, 0.5, classes=(1,)), NmsConfig(0.25, 0.45, max_det=3),
           NmsConfig(0.05, 0.3)]


def _sample(name, hw):
    image = cv2.imread(str(assets.sample_image_path(name)), cv2.IMREAD_COLOR)
    assert image is not None, name
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _assert_equal(ours, expected):
    np.testing.assert_array_equal(ours.boxes, expected.boxes)
    np.testing.assert_array_equal(ours.scores, expected.scores)
    np.testing.assert_array_equal(ours.class_ids, expected.class_ids)


def _assert_close(ours, expected, box_px=1e-3, score=1e-5):
    assert ours.class_ids.tolist() == expected.class_ids.tolist()
    np.testing.assert_allclose(ours.boxes, expected.boxes, rtol=0, atol=box_px)
    np.testing.assert_allclose(ours.scores, expected.scores, rtol=0, atol=score)


# --- the CPU path's network input -------------------------------------------------------------

@pytest.mark.parametrize('dtype', [np.float32, np.float16, np.float64])
def test_network_input_equals_true_division_to_the_bit(dtype):
    bgr = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    expected = np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None]).astype(dtype)
    np.divide(expected, 255, out=expected)
    planes = np.full((3, 37, 53), 7, np.uint8)
    out = np.full((1, 3, 37, 53), np.nan, dtype)
    assert to_network_input(bgr, dtype, out=out, planes=planes) is out
    np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))
    flipped = to_network_input(bgr[::-1, ::-1], dtype)
    np.testing.assert_array_equal(flipped, expected[:, :, ::-1, ::-1])
    with pytest.raises(ValueError):
        to_network_input(bgr, dtype, out=np.empty((1, 3, 53, 37), dtype))
    with pytest.raises(ValueError):
        to_network_input(bgr, dtype, planes=np.empty((3, 53, 37), np.uint8))


# --- the real default model: ONNX Runtime behind `infer_torch` --------------------------------

@pytest.fixture(scope='module')
def real():
    """(numpy HumanDetector on the default ONNX model, {resize_on: TorchPipeline on it})."""
    with HumanDetector(backend='onnxruntime', device='cpu') as detector:
        engine = OnnxThroughTorch(detector.engine)
        yield detector, {mode: TorchPipeline(engine, detector.layout, detector.postprocess,
                                             resize_on=mode)
                         for mode in ('host', 'device')}


REAL_FRAMES = [('camera.png', (720, 1280)), ('astronaut.png', (1080, 1920)),
               ('astronaut.png', (1999, 601)), ('coffee.png', (720, 1280))]
SOME_PEOPLE = NmsConfig(0.25, 0.45)


@pytest.mark.parametrize('resize_on', ['host', 'device'])
@pytest.mark.parametrize('name, hw', REAL_FRAMES)
def test_real_model_pipeline_equals_numpy_pipeline(real, name, hw, resize_on):
    """Either letterbox gives OpenCV's bytes (the device one by its fixed-point arithmetic):
    the same detections to the bit."""
    detector, pipelines = real
    frame = _sample(name, hw)
    for config in (NmsConfig(), SOME_PEOPLE):
        detector.config = config
        expected = detector(frame)
        ours = pipelines[resize_on].run(frame, detector.checked_transform(frame), config,
                                        time.perf_counter())
        _assert_equal(ours, expected)
    assert len(ours) > 0 or name == 'coffee.png'
    assert pipelines[resize_on].fallbacks == 0
    detector.config = NmsConfig()


# --- TorchScript models through HumanDetector ---------------------------------------------------

class TinyYolo(nn.Module):
    """[1, 3, H, W] -> [1, 4 + nc, (H / 16) * (W / 16)]: overlapping boxes, sigmoid scores.

    Scores are standardised per image, so a few hundred anchors pass conf 0.05 to 0.5.
    """

    def __init__(self, nc: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 4 + nc, kernel_size=16, stride=16)
        # Buffers, not arange in forward: a traced arange keeps the tracing device.
        grid_y, grid_x = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing='ij')
        self.register_buffer('grid_x', (grid_x + 0.5) * 16)
        self.register_buffer('grid_y', (grid_y + 0.5) * 16)

    def forward(self, x):
        y = self.head(x)
        centre_x = self.grid_x + y[:, 0] * 8
        centre_y = self.grid_y + y[:, 1] * 8
        width = 40 + 80 * y[:, 2].sigmoid()
        height = 60 + 120 * y[:, 3].sigmoid()
        boxes = torch.stack((centre_x, centre_y, width, height), 1)
        logits = y[:, 4:].flatten(2)
        logits = (logits - logits.mean(2, keepdim=True)) / logits.std(2, keepdim=True)
        return torch.cat((boxes.flatten(2), (logits * 2 - 4).sigmoid()), 1)


class TinyEndToEnd(TinyYolo):
    """[1, 3, H, W] -> [1, 300, 6]: the 300 best rows x1, y1, x2, y2, score, class."""

    def forward(self, x):
        raw = super().forward(x)[0]
        scores, classes = raw[4:].max(0)
        best = scores.topk(300).indices
        xy, half = raw[:2, best].T, raw[2:4, best].T / 2
        rows = torch.cat((xy - half, xy + half, scores[best, None],
                          classes[best, None].float()), 1)
        return rows[None]


def _export(path, module, half=False, device='cpu'):
    example = torch.zeros((1, 3, 640, 640), device=device)
    module = module.eval().to(device)
    if half:
        module, example = module.half(), example.half()
    traced = torch.jit.trace(module, example, strict=False)
    config = {'imgsz': [640, 640], 'stride': 32, 'task': 'detect', 'names': NAMES}
    torch.jit.save(traced, str(path), _extra_files={'config.txt': json.dumps(config)})
    return path


@pytest.fixture(scope='module')
def tiny_path(tmp_path_factory):
    return _export(tmp_path_factory.mktemp('tiny') / 'tiny.torchscript', TinyYolo())


def _pair(path, device, resize_on='host', **kwargs):
    """(torch-pipeline detector, numpy-pipeline detector) on two engines of one model."""
    return (HumanDetector(path, device=device, pipeline='torch', resize_on=resize_on,
                          conf_threshold=0.25, **kwargs),
            HumanDetector(path, device=device, pipeline='numpy', conf_threshold=0.25))


FRAMES = [('camera.png', (720, 1280)), ('astronaut.png', (1080, 1920)),
          ('camera.png', (333, 999))]


@pytest.mark.parametrize('device', DEVICES)
def test_torch_pipeline_equals_numpy_pipeline(tiny_path, device):
    ours, numpy_path = _pair(tiny_path, device)
    compare = _assert_equal if device == 'cpu' else _assert_close
    for name, hw in FRAMES:
        frame = _sample(name, hw)
        for config in CONFIGS:
            ours.config = numpy_path.config = config
            expected = numpy_path(frame)
            assert len(expected) > 0
            compare(ours(frame), expected)
    # The tiny model's grid of boxes makes long suppression chains: some frames need more
    # rounds than the fixed-size NMS runs and take the exact fallback, the others do not.
    assert 0 < ours.torch_pipeline.fallbacks < len(FRAMES) * len(CONFIGS)


@pytest.mark.parametrize('device', DEVICES)
def test_device_resize_equals_numpy_pipeline(tiny_path, device):
    ours, numpy_path = _pair(tiny_path, device, resize_on='device')
    compare = _assert_equal if device == 'cpu' else _assert_close
    for name, hw in FRAMES + [('camera.png', (23, 17)), ('astronaut.png', (2160, 3840))]:
        frame = _sample(name, hw)
        expected = numpy_path(frame)
        assert len(expected) > 0
        compare(ours(frame), expected)


@pytest.mark.parametrize('device', DEVICES)
def test_device_resize_uploads_only_the_rows_it_reads(tiny_path, device):
    """1080p and 4K are exact 1/3 and 1/6 downscales: a third and a sixth of the rows go to
    the device; 720p (1/2) needs every row. Read-only and flipped frames are gathered alike."""
    ours, numpy_path = _pair(tiny_path, device, resize_on='device')
    compare = _assert_equal if device == 'cpu' else _assert_close
    for hw, uploaded in (((1080, 1920), 360), ((2160, 3840), 720), ((720, 1280), 720)):
        frame = _sample('astronaut.png', hw)
        read_only = frame.copy()
        read_only.flags.writeable = False
        for image in (frame, read_only, frame[::-1, ::-1]):
            expected = numpy_path(image)
            assert len(expected) > 0
            compare(ours(image), expected)
        stage = ours.torch_pipeline._stages[(hw, 0)]
        assert stage.host.shape == stage.frame.shape == (uploaded, hw[1], 3)
        assert (stage.rows is None) == (uploaded == hw[0])


# (rows, pattern): 1080p and 4K letterboxes, one run, irregular sets, all rows.
ROW_SETS = [(np.arange(1, 1080, 3), (1, 3, 360, 1)),
            (np.sort(np.r_[2:1080:6, 3:1080:6]), (2, 6, 180, 2)),
            (np.arange(4, 9), (4, 5, 1, 5)), (np.array([7]), (7, 1, 1, 1)),
            (np.array([0, 1, 2, 4, 5, 6, 9]), None), (np.array([0, 1, 4, 5, 8]), None),
            (np.array([0, 3, 6, 10]), None), (None, None)]


@pytest.mark.parametrize('rows, pattern', ROW_SETS)
def test_row_copy_equals_numpy_indexing(rows, pattern):
    if rows is not None:
        assert regular_rows(rows) == pattern
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (1080, 1930, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(wide[:, :1920])
    read_only = frame.copy()
    read_only.flags.writeable = False
    out = torch.full((1080 if rows is None else len(rows), 1920, 3), 7, dtype=torch.uint8)
    copy_rows = RowCopy(rows, out)
    # C-contiguous, read-only, flipped (negative strides), a column slice (strided rows).
    for image in (frame, read_only, frame[::-1, ::-1], wide[:, 5:1925]):
        out.fill_(7)
        copy_rows(image)
        np.testing.assert_array_equal(out.numpy(), image if rows is None else image[rows])


@pytest.mark.parametrize('device', DEVICES)
def test_auto_pipeline_is_torch_on_cuda_only(tiny_path, device):
    with HumanDetector(tiny_path, device=device) as detector:
        assert (detector.torch_pipeline is not None) == (device == 'cuda')


def test_ultralytics_end_to_end_layout(tmp_path):
    path = _export(tmp_path / 'e2e.torchscript', TinyEndToEnd())
    ours, numpy_path = _pair(path, 'cpu')
    assert ours.layout is OutputLayout.END_TO_END
    for name, hw in FRAMES:
        frame = _sample(name, hw)
        _assert_equal(ours(frame), numpy_path(frame))


@pytest.mark.parametrize('device', DEVICES)
def test_buffers_are_allocated_once(tiny_path, device):
    detector = HumanDetector(tiny_path, device=device, pipeline='torch')
    pipeline = detector.torch_pipeline
    frames = [_sample('camera.png', (720, 1280)), _sample('astronaut.png', (720, 1280))]
    for frame in frames:
        detector(frame)
    stage = pipeline._stages[((720, 1280), 0)]
    pointers = (pipeline.input.data_ptr(), stage.frame.data_ptr(), stage.host.data_ptr())
    # Earlier tests' pipelines (reference cycles) must not be collected mid-measurement.
    gc.collect()
    allocated = torch.cuda.memory_allocated() if device == 'cuda' else None
    for frame in frames * 5:
        detector(frame)
    assert (pipeline.input.data_ptr(), stage.frame.data_ptr(),
            stage.host.data_ptr()) == pointers
    assert list(pipeline._stages) == [((720, 1280), 0)]
    if device == 'cuda':
        assert torch.cuda.memory_allocated() == allocated


def test_least_recently_used_source_size_is_dropped(tiny_path):
    detector = HumanDetector(tiny_path, device='cpu', pipeline='torch', conf_threshold=0.25)
    sizes = [(300 + 10 * index, 500) for index in range(KEPT_SOURCE_SIZES + 1)]
    first = [detector(_sample('camera.png', hw)) for hw in sizes]
    assert list(detector.torch_pipeline._stages) == [(hw, 0) for hw in sizes[1:]]
    _assert_equal(detector(_sample('camera.png', sizes[0])), first[0])
    assert list(detector.torch_pipeline._stages) == [(hw, 0) for hw in sizes[2:] + sizes[:1]]


def test_too_many_candidates_fall_back_to_the_exact_nms(tiny_path):
    ours, numpy_path = _pair(tiny_path, 'cpu')
    ours.torch_pipeline = TorchPipeline(ours.engine, ours.layout, ours.postprocess,
                                        resize_on='host', nms_capacity=4)
    frame = _sample('astronaut.png', (720, 1280))
    _assert_equal(ours(frame), numpy_path(frame))
    assert ours.torch_pipeline.fallbacks == 1


def test_timings_and_invalid_frames(tiny_path):
    detector = HumanDetector(tiny_path, device='cpu', pipeline='torch')
    detector(_sample('camera.png', (480, 640)))
    timings = detector.last_timings
    assert timings.preprocess_ms > 0 and timings.infer_ms > 0 and timings.postprocess_ms > 0
    with pytest.raises(InvalidImageError):
        detector(np.zeros((10, 10, 4), np.uint8))


def test_torch_pipeline_needs_a_torch_engine(tiny_path):
    with pytest.raises(ModelLoadError, match='TorchScript'):
        HumanDetector(backend='onnxruntime', device='cpu', pipeline='torch')
    with pytest.raises(ValueError, match='pipeline'):
        HumanDetector(tiny_path, pipeline='gpu')
    with pytest.raises(ValueError, match='resize_on'):
        HumanDetector(tiny_path, device='cpu', pipeline='torch', resize_on='camera')


# --- CUDA only --------------------------------------------------------------------------------

@CUDA
@pytest.mark.parametrize('resize_on', ['host', 'device'])
def test_cuda_graphs_replay_with_one_synchronisation(tiny_path, resize_on):
    detector = HumanDetector(tiny_path, device='cuda', pipeline='torch', resize_on=resize_on)
    pipeline = detector.torch_pipeline
    frame = _sample('camera.png', (1080, 1920))
    first = detector(frame)
    stage = next(iter(pipeline._stages.values()))
    assert pipeline._batches[1].forward.graph is not None
    assert pipeline._batches[1].decode.graph is not None
    assert stage.letterbox.graph is not None and pipeline.fallbacks == 0
    torch.cuda.set_sync_debug_mode('error')
    try:
        again = [detector(frame) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode('default')
    for detections in again:
        _assert_equal(detections, first)


@CUDA
def test_cuda_capture_failure_runs_eagerly(tiny_path, monkeypatch, caplog):
    class Refused:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            raise RuntimeError('capture refused for this test')

        def __exit__(self, *exc_info):
            return False

    ours, numpy_path = _pair(tiny_path, 'cuda')
    monkeypatch.setattr(torch.cuda, 'graph', Refused)
    eager = HumanDetector(tiny_path, device='cuda', pipeline='torch', resize_on='host',
                          conf_threshold=0.25)
    assert 'capture refused for this test' in caplog.text
    assert eager.torch_pipeline._batches[1].forward.graph is None
    frame = _sample('astronaut.png', (720, 1280))
    _assert_close(eager(frame), numpy_path(frame))
    _assert_close(ours(frame), numpy_path(frame))


@CUDA
def test_cuda_half_model(tmp_path):
    path = _export(tmp_path / 'half.torchscript', TinyYolo(), half=True, device='cuda')
    ours, numpy_path = _pair(path, 'cuda')
    assert ours.torch_pipeline.input.dtype == torch.float16
    for name, hw in FRAMES:
        frame = _sample(name, hw)
        _assert_close(ours(frame), numpy_path(frame), box_px=0.05, score=1e-3)


def test_no_frames_leak_between_calls(tiny_path):
    """Kept rows are copied out of the reused buffers: earlier results stay intact."""
    detector = HumanDetector(tiny_path, device='cpu', pipeline='torch', conf_threshold=0.25)
    first_frame = _sample('camera.png', (720, 1280))
    first = detector(first_frame)
    saved = (first.boxes.copy(), first.scores.copy(), first.class_ids.copy())
    detector(_sample('astronaut.png', (720, 1280)))
    for kept, now in zip(saved, (first.boxes, first.scores, first.class_ids)):
        np.testing.assert_array_equal(kept, now)


def test_network_input_of_the_torch_pipeline_equals_numpy(tiny_path):
    detector = HumanDetector(tiny_path, device='cpu', pipeline='torch', resize_on='host')
    frame = _sample('astronaut.png', (333, 999))
    detector(frame)
    images, _ = detector.preprocess(frame)
    np.testing.assert_array_equal(detector.torch_pipeline.input.numpy(), images)


def test_the_core_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; "
            "import human_detector_ros.detector, human_detector_ros.gpu_pipeline")
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)
