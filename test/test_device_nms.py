"""The fixed-size NMS (torch and Triton implementations) equals the numpy NMS.

The torch implementation runs on the CPU here and on CUDA where there is a GPU. The Triton one
runs on CUDA where Triton imports, and without a GPU in Triton's interpreter on the CPU (the
same kernel code, executed with numpy) when Triton is installed.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from human_detector_ros import postprocess as np_post
from human_detector_ros.postprocess import NmsConfig

torch = pytest.importorskip('torch')
from human_detector_ros import device_nms  # noqa: E402
from human_detector_ros.device_nms import NMS_CAPACITY, NMS_ROUNDS, NmsLimits  # noqa: E402
from triton_kernels import kernel_module  # noqa: E402

# Empty boxes have IoU 0/0 = NaN (what the numpy NMS computes too); the interpreter warns.
pytestmark = pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')
CUDA_AVAILABLE = torch.cuda.is_available()
CUDA = pytest.mark.skipif(not CUDA_AVAILABLE, reason='no CUDA device for PyTorch')
CONFIGS = [NmsConfig(0.25, 0.45), NmsConfig(0.1, 0.7, agnostic=True),
           NmsConfig(0.2, 0.5, classes=(1,)), NmsConfig(0.25, 0.45, max_det=3),
           NmsConfig(0.05, 0.3)]
IMPLEMENTATIONS = ['torch-cpu', pytest.param('torch-cuda', marks=CUDA),
                   pytest.param('triton-cuda', marks=CUDA), 'triton-interpreter']


@pytest.fixture(params=IMPLEMENTATIONS)
def nms(request):
    """(prediction (4+nc, N) numpy, config, capacity, rounds) -> packed (k+2, 6) numpy."""
    kind, device = request.param.split('-')
    if device == 'interpreter' and CUDA_AVAILABLE:
        pytest.skip('the Triton kernels run compiled on this machine')
    device = 'cuda' if device == 'cuda' else 'cpu'
    kernels = None
    if kind == 'triton':
        kernels = kernel_module('device_nms_triton')
        if kernels is None:
            pytest.skip('Triton is not installed, or was imported before its interpreter')

    def run(prediction, config, capacity=NMS_CAPACITY, rounds=NMS_ROUNDS):
        limits = NmsLimits(prediction.shape[0] - 4, torch.device(device))
        limits.apply(config)
        tensor = torch.from_numpy(prediction).to(device)
        if kernels is None:
            packed = device_nms.torch_nms(tensor, limits, capacity, rounds)
        else:
            packed = kernels.fixed_size_nms(
                tensor, limits.conf, limits.iou, limits.class_offset, limits.class_mask,
                min(capacity, tensor.shape[1]), limits.scratch)
        return packed.cpu().numpy()

    run.kind = kind
    return run


def _clustered_prediction(rng, objects, classes, anchors=8400, per_object=20, strays=150):
    """[4 + nc, N] raw head output: jittered boxes around a few objects, and stray boxes."""
    xy = rng.uniform(0, 640, (2, anchors))
    wh = rng.uniform(4, 200, (2, anchors))
    scores = rng.uniform(0, 0.04, (classes, anchors))
    stray_ids = rng.permutation(anchors)[:strays]
    scores[rng.integers(0, classes, strays), stray_ids] = rng.uniform(0.05, 0.5, strays)
    slots = rng.permutation(anchors)[:objects * per_object].reshape(objects, per_object)
    for anchor_ids in slots:
        centre, size = rng.uniform(50, 590, 2), rng.uniform(20, 300, 2)
        xy[:, anchor_ids] = centre[:, None] + rng.normal(0, size[:, None] / 6, (2, per_object))
        wh[:, anchor_ids] = size[:, None] * rng.uniform(0.6, 1.4, (2, per_object))
        scores[rng.integers(0, classes), anchor_ids] = rng.uniform(0.05, 0.95, per_object)
    return np.concatenate([xy, wh, scores]).astype(np.float32)


def _check(nms, prediction, config, **kwargs):
    """Run `nms`, compare with the numpy NMS; returns the packed result."""
    before = prediction.copy()
    expected = np_post.non_max_suppression(prediction, config)
    packed = nms(prediction, config, **kwargs)
    kept, candidates, unsettled = packed[0, :3]
    assert unsettled == 0 and candidates <= packed.shape[0] - 2
    np.testing.assert_array_equal(packed[1:1 + min(int(kept), config.max_det)], expected)
    np.testing.assert_array_equal(prediction, before)
    return packed


@pytest.mark.parametrize('classes', [1, 2, 80])
@pytest.mark.parametrize('config', CONFIGS, ids=repr)
def test_fixed_size_nms_equals_numpy_nms(nms, classes, config):
    # Dense: 150 to 400 candidates, suppression chains many boxes long.
    anchors = 2100 if nms.kind == 'triton' and not CUDA_AVAILABLE else 8400
    prediction = _clustered_prediction(np.random.default_rng(classes), 12, classes, anchors)
    if config.classes is not None:
        present = int(np.argmax(prediction[4:].max(1)))
        config = NmsConfig(config.conf_threshold, config.iou_threshold, classes=(present,))
    assert len(_check(nms, prediction, config)) > 0
    assert len(np_post.non_max_suppression(prediction, config)) > 0


def test_fixed_size_nms_at_realistic_candidate_counts(nms):
    """0 to 60 candidates, as the default model gives, on fresh random outputs."""
    seed = int.from_bytes(os.urandom(4), 'little')
    rng = np.random.default_rng(seed)
    for objects in (0, 1, 3):
        prediction = _clustered_prediction(rng, objects, 2, per_object=15, strays=10)
        for config in (NmsConfig(0.25, 0.45), NmsConfig(0.05, 0.7),
                       NmsConfig(0.1, 0.45, agnostic=True)):
            packed = _check(nms, prediction, config)
            assert packed[0, 1] <= 60, f'seed {seed}'


def test_fixed_size_nms_ties_nans_and_degenerate_boxes(nms):
    """Equal scores keep anchor order; NaN scores are no candidates; empty boxes suppress
    nothing (their IoU is NaN); float16 outputs are compared as float32, as numpy does."""
    rng = np.random.default_rng(8)
    prediction = _clustered_prediction(rng, 6, 3, anchors=2100, per_object=12, strays=40)
    scores = prediction[4:]
    scores[scores > 0.05] = np.round(scores[scores > 0.05] * 8) / 8
    prediction[2:4, rng.permutation(2100)[:30]] = 0
    prediction[4, rng.permutation(2100)[:20]] = np.nan
    for config in (NmsConfig(0.1, 0.45), NmsConfig(0.1, 0.45, agnostic=True)):
        _check(nms, prediction, config)
        half = prediction.astype(np.float16)
        expected = np_post.non_max_suppression(half.astype(np.float32), config)
        packed = nms(half, config)
        np.testing.assert_array_equal(packed[1:1 + int(packed[0, 0])], expected)


def test_fixed_size_nms_reports_what_it_could_not_settle(nms):
    prediction = _clustered_prediction(np.random.default_rng(5), objects=12, classes=2)
    config = NmsConfig(0.05, 0.3)
    candidates = int((prediction[4:].max(0) > 0.05).sum())
    over = nms(prediction, config, capacity=candidates - 1)
    assert over.shape == (candidates + 1, 6) and over[0, 1] == candidates
    if nms.kind == 'torch':
        assert nms(prediction, config, rounds=0)[0, 2] > 0
    empty = nms(prediction, NmsConfig(0.99), capacity=64)
    assert empty[0, :3].tolist() == [0, 0, 0]
    # Once more after a full frame: the Triton counter starts again from zero.
    _check(nms, prediction, NmsConfig(0.25, 0.45))


def test_the_dispatcher_takes_torch_on_the_cpu(monkeypatch):
    monkeypatch.setattr(device_nms, 'triton_nms', lambda: pytest.fail('Triton on the CPU'))
    prediction = _clustered_prediction(np.random.default_rng(1), 4, 2)
    limits = NmsLimits(2, torch.device('cpu'))
    limits.apply(NmsConfig())
    packed = device_nms.fixed_size_nms(torch.from_numpy(prediction), limits, 64, NMS_ROUNDS)
    assert packed.shape == (66, 6)


def test_a_failing_triton_nms_leaves_the_torch_nms(monkeypatch, caplog):
    class Broken:
        @staticmethod
        def fixed_size_nms(*args):
            raise RuntimeError('no compiler for this GPU')

    class CudaLooking(torch.Tensor):
        is_cuda = True

    monkeypatch.setattr(device_nms, 'triton_nms', lambda: Broken)
    monkeypatch.setattr(device_nms, '_TRITON_FAILED', [])
    prediction = _clustered_prediction(np.random.default_rng(2), 4, 2)
    limits = NmsLimits(2, torch.device('cpu'))
    limits.apply(NmsConfig())
    tensor = torch.from_numpy(prediction).as_subclass(CudaLooking)
    packed = device_nms.fixed_size_nms(tensor, limits, 64, NMS_ROUNDS)
    assert 'no compiler for this GPU' in caplog.text and device_nms._TRITON_FAILED
    expected = np_post.non_max_suppression(prediction, NmsConfig())
    np.testing.assert_array_equal(np.asarray(packed[1:1 + int(packed[0, 0])]), expected)


def test_iou_floor_is_the_largest_float32_not_above_the_threshold():
    limits = NmsLimits(1, torch.device('cpu'))
    for threshold in (0.45, 0.5, 0.7, 0.3, 0.0, 1.0, 0.1 + 1e-12):
        limits.apply(NmsConfig(iou_threshold=threshold))
        floor = limits.iou_floor.item()
        assert floor <= threshold
        above = np.nextafter(np.float32(floor), np.float32(np.inf))
        assert float(above) > threshold


@CUDA
@pytest.mark.parametrize('kind', ['triton', 'torch'])
def test_cuda_graph_replay_follows_new_outputs_and_configs(kind, monkeypatch):
    """Captured once, replayed on other head outputs and thresholds, with no host sync."""
    if kind == 'torch':
        monkeypatch.setattr(device_nms, 'triton_nms', lambda: None)
    elif device_nms.triton_nms() is None:
        pytest.skip('Triton does not import')
    rng = np.random.default_rng(3)
    predictions = [_clustered_prediction(rng, objects, 2) for objects in (2, 12, 0, 5)]
    static = torch.from_numpy(predictions[0]).cuda()
    limits = NmsLimits(2, static.device)
    limits.apply(NmsConfig())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            device_nms.fixed_size_nms(static, limits, NMS_CAPACITY, NMS_ROUNDS)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        packed = device_nms.fixed_size_nms(static, limits, NMS_CAPACITY, NMS_ROUNDS)
    for prediction in predictions:
        for config in (NmsConfig(0.25, 0.45), NmsConfig(0.1, 0.6, agnostic=True)):
            static.copy_(torch.from_numpy(prediction))
            limits.apply(config)
            torch.cuda.set_sync_debug_mode('error')
            try:
                graph.replay()
            finally:
                torch.cuda.set_sync_debug_mode('default')
            result = packed.cpu().numpy()
            expected = np_post.non_max_suppression(prediction, config)
            assert result[0, 2] == 0 and result[0, 1] <= NMS_CAPACITY
            np.testing.assert_array_equal(result[1:1 + int(result[0, 0])], expected)
