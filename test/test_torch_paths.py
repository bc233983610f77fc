"""Torch letterbox and NMS equal the numpy/OpenCV reference, on CPU and (if any) CUDA."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from human_detector_ros import letterbox as np_letterbox
from human_detector_ros import postprocess as np_post
from human_detector_ros.letterbox import letterbox_transform, LetterboxTransform
from human_detector_ros.postprocess import NmsConfig, OutputLayout

torch = pytest.importorskip('torch')
from human_detector_ros import letterbox_torch, postprocess_torch  # noqa: E402
from triton_kernels import kernel_module  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
DEVICES = ['cpu', pytest.param('cuda', marks=CUDA)]
INPUT_HW = (640, 640)
SIZES = [(23, 17), (17, 23), (480, 640), (640, 640), (1080, 1920), (333, 999), (1999, 601),
         (1, 3000), (100, 50)]


def _image(hw, seed=0):
    """Smooth content plus noise: a realistic mix of flat and busy regions."""
    rng = np.random.default_rng(seed)
    height, width = hw
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = (127 + 100 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None]
              * np.array([1.0, 0.6, -0.8]))
    noisy = smooth + rng.normal(0, 20, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _numpy_input(bgr, transform, dtype=np.float32):
    return np_letterbox.to_network_input(np_letterbox.letterbox(bgr, transform), dtype)


def _fresh_rng():
    """A generator with a new seed every run, and the seed to reproduce a failure."""
    seed = int.from_bytes(os.urandom(4), 'little')
    return np.random.default_rng(seed), seed


def _resize_transform(src_hw, dst_hw):
    """A LetterboxTransform whose resize is src_hw -> dst_hw exactly, with no padding."""
    return LetterboxTransform(src_hw=src_hw, dst_hw=dst_hw, scale=1.0, pad_left=0, pad_top=0,
                              resized_hw=dst_hw)


# (source, destination) (h, w): up and down, both orientations, odd sizes, 1-pixel sides, exact
# 2x downscales (OpenCV's INTER_AREA shortcut) and other integer factors.
RESIZES = [((23, 17), (640, 473)), ((17, 23), (473, 640)), ((1, 3000), (1, 640)),
           ((3000, 1), (640, 1)), ((2160, 3840), (360, 640)), ((3840, 2160), (640, 360)),
           ((1080, 1920), (360, 640)), ((720, 1280), (360, 640)), ((1281, 721), (640, 360)),
           ((46, 34), (23, 17)), ((7, 5), (3, 2)), ((1, 1), (5, 9)), ((3, 2), (1, 1)),
           ((333, 999), (213, 640)), ((1999, 601), (640, 192)), ((480, 640), (480, 641)),
           ((479, 640), (640, 640)), ((100, 50), (640, 320)), ((2, 3000), (1, 640)),
           ((641, 639), (640, 638)), ((1200, 5), (640, 3))]


@pytest.mark.parametrize('src_hw, dst_hw', RESIZES)
def test_torch_resize_equals_opencv_bytes(src_hw, dst_hw):
    rng, seed = _fresh_rng()
    bgr = rng.integers(0, 256, src_hw + (3,), dtype=np.uint8)
    expected = cv2.resize(bgr, dst_hw[::-1], interpolation=cv2.INTER_LINEAR)
    resize = letterbox_torch.DeviceLetterbox(_resize_transform(src_hw, dst_hw), 'cpu')
    ours = resize.resize(torch.from_numpy(bgr[resize.source_rows]))
    assert ours.dtype == torch.int32
    np.testing.assert_array_equal(ours.numpy(), expected, err_msg=f'seed {seed}')


def test_torch_resize_equals_opencv_bytes_at_random_sizes():
    rng, seed = _fresh_rng()
    for _ in range(40):
        src_hw = tuple(int(side) for side in rng.integers(1, 1500, 2))
        dst_hw = tuple(int(side) for side in rng.integers(1, 900, 2))
        bgr = rng.integers(0, 256, src_hw + (3,), dtype=np.uint8)
        expected = cv2.resize(bgr, dst_hw[::-1], interpolation=cv2.INTER_LINEAR)
        resize = letterbox_torch.DeviceLetterbox(_resize_transform(src_hw, dst_hw), 'cpu')
        ours = resize.resize(torch.from_numpy(bgr[resize.source_rows]))
        np.testing.assert_array_equal(ours.numpy(), expected,
                                      err_msg=f'seed {seed}: {src_hw} -> {dst_hw}')


# (device, letterbox kind): torch operations, or the Triton kernel (on the CPU in Triton's
# interpreter, where a 640x640 input takes seconds: it letterboxes into a small input there).
LETTERBOX_KINDS = [('cpu', 'torch'), ('cpu', 'triton'), pytest.param('cuda', 'torch', marks=CUDA),
                   pytest.param('cuda', 'triton', marks=CUDA)]
INTERPRETER_INPUT_HW = (40, 56)


def _device_letterbox(transform, device, kind):
    """A DeviceLetterbox of `kind` ('torch' or 'triton'); skips where Triton is missing, and
    the Triton kernel on the CPU where it is compiled (for CUDA) rather than interpreted."""
    if kind == 'triton' and kernel_module('letterbox_triton') is None:
        pytest.skip('Triton is not installed, or was imported before its interpreter')
    if (kind, device) == ('triton', 'cpu') and torch.cuda.is_available():
        pytest.skip('the Triton kernel runs compiled for CUDA on this machine')
    return letterbox_torch.DeviceLetterbox(transform, torch.device(device),
                                           use_triton=kind == 'triton')


@pytest.mark.parametrize('device, kind', LETTERBOX_KINDS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('hw', SIZES)
def test_torch_letterbox_equals_numpy_letterbox_bytes(device, kind, dtype, hw):
    rng, seed = _fresh_rng()
    bgr = rng.integers(0, 256, hw + (3,), dtype=np.uint8) if hw[0] % 2 else _image(hw, seed)
    input_hw = INTERPRETER_INPUT_HW if (device, kind) == ('cpu', 'triton') else INPUT_HW
    transform = letterbox_transform(hw, input_hw)
    out = torch.full((1, 3) + input_hw, -1.0, dtype=dtype, device=device)
    letterbox = _device_letterbox(transform, device, kind)
    assert letterbox(torch.from_numpy(bgr), out) is out
    expected = _numpy_input(bgr, transform, np.float16 if dtype == torch.float16 else np.float32)
    np.testing.assert_array_equal(out.cpu().numpy(), expected, err_msg=f'seed {seed}')
    if kind == 'torch':
        again = letterbox_torch.letterbox_to_input(torch.from_numpy(bgr).to(device), transform,
                                                   torch.empty_like(out))
        assert torch.equal(again, out)
    rows = torch.from_numpy(bgr[letterbox.source_rows])
    assert torch.equal(letterbox(rows, torch.empty_like(out)), out)
    assert not letterbox_torch._TRITON_FAILED  # no fallback to the torch operations


# Letterbox source sizes: integer downscales (1/3, 1/6, 1/2 reads every row), sizes with rows
# read only with weights 1 or 2 (813x1280), other odd and upscaled ones.
ROW_SIZES = [(1080, 1920), (2160, 3840), (720, 1280), (813, 1280), (1200, 1920), (1999, 601),
             (333, 999), (23, 17), (1281, 719), (3000, 1)]


def _output_rows_reading(transform):
    """(src_h,) list: the letterbox output rows whose resize reads each source row."""
    rows, _ = letterbox_torch.linear_resize_tables(transform.src_hw[0],
                                                   transform.resized_hw[0], clamp_weights=False)
    reading = [[] for _ in range(transform.src_hw[0])]
    for output_row, pair in enumerate(rows.T):
        for row in set(pair.tolist()):
            reading[row].append(output_row + transform.pad_top)
    return reading


@pytest.mark.parametrize('hw', ROW_SIZES)
def test_source_rows_are_exactly_the_rows_opencv_needs(hw):
    """Rows left out of source_rows never change cv2's letterbox; each kept row changes it
    for some content."""
    rng, seed = _fresh_rng()
    transform = letterbox_transform(hw, INPUT_HW)
    rows = letterbox_torch.DeviceLetterbox(transform, 'cpu').source_rows
    assert np.all(np.diff(rows) > 0) and 0 <= rows[0] and rows[-1] < hw[0]
    left_out = np.setdiff1d(np.arange(hw[0]), rows)
    bgr = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    changed = bgr.copy()
    changed[left_out] = rng.integers(0, 256, changed[left_out].shape, dtype=np.uint8)
    np.testing.assert_array_equal(np_letterbox.letterbox(changed, transform),
                                  np_letterbox.letterbox(bgr, transform), err_msg=f'seed {seed}')
    # An output row reads source rows sy and sy + 1: two rows of one parity never meet in it,
    # so changing all kept rows of one parity at once shows each one's effect separately.
    reading = _output_rows_reading(transform)
    for parity in (0, 1):
        kept = rows[rows % 2 == parity]
        unseen = set(kept.tolist())
        for _ in range(4):
            low = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
            low[kept] = 0
            high = low.copy()
            high[kept] = 255
            differs = np.any(np_letterbox.letterbox(low, transform)
                             != np_letterbox.letterbox(high, transform), axis=(1, 2))
            unseen = {row for row in unseen if not differs[reading[row]].any()}
        assert not unseen, f'seed {seed}: rows {sorted(unseen)[:10]} never change the output'


@pytest.mark.parametrize('hw, count', [((1080, 1920), 360), ((2160, 3840), 720),
                                       ((720, 1280), 720), ((640, 640), 640)])
def test_integer_downscales_read_fewer_rows(hw, count):
    rows = letterbox_torch.DeviceLetterbox(letterbox_transform(hw, INPUT_HW), 'cpu').source_rows
    assert len(rows) == count
    if hw == (1080, 1920):  # an exact 1/3: output row d sits on source row 3 d + 1
        np.testing.assert_array_equal(rows, np.arange(1, 1080, 3))


@CUDA
def test_cuda_letterbox_bytes_equal_opencv():
    """On the GPU: the letterboxed uint8 image equals cv2's, byte for byte."""
    rng, seed = _fresh_rng()
    for hw in SIZES + [(2160, 3840), (3840, 2160), (720, 1280), (1281, 719)]:
        bgr = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
        transform = letterbox_transform(hw, INPUT_HW)
        out = torch.empty((1, 3) + INPUT_HW, device='cuda')
        letterbox = letterbox_torch.DeviceLetterbox(transform, torch.device('cuda'))
        for frame in (bgr, bgr[letterbox.source_rows]):  # the whole frame, or only its rows
            out.fill_(-1)
            letterbox(torch.from_numpy(frame).cuda(), out)
            ours = (out[0] * 255).round().to(torch.uint8).flip(0).permute(1, 2, 0).cpu().numpy()
            np.testing.assert_array_equal(ours, np_letterbox.letterbox(bgr, transform),
                                          err_msg=f'seed {seed}: {hw}')


@pytest.mark.parametrize('kind', ['torch', 'triton'])
def test_letterbox_at_random_sizes_and_rows_equals_numpy(kind):
    """Random source and input sizes, the whole frame and its rows: torch ops, and the
    Triton kernel (on CUDA, else interpreted at sizes the interpreter runs quickly)."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    rng, seed = _fresh_rng()
    # Also sources that need no resize, only padding (or nothing).
    fitting = [((40, 56), (40, 56)), ((30, 56), (40, 56)), ((40, 20), (40, 56))]
    random = [(tuple(int(side) for side in rng.integers(1, 400, 2)),
               tuple(int(side) for side in rng.integers(8, 72, 2))) for _ in range(12)]
    for src_hw, input_hw in fitting + random:
        bgr = rng.integers(0, 256, src_hw + (3,), dtype=np.uint8)
        transform = letterbox_transform(src_hw, input_hw)
        letterbox = _device_letterbox(transform, device, kind)
        expected = _numpy_input(bgr, transform, np.float16)
        for frame in (bgr, bgr[letterbox.source_rows]):
            out = torch.full((1, 3) + input_hw, -1.0, dtype=torch.float16, device=device)
            letterbox(torch.from_numpy(frame), out)
            np.testing.assert_array_equal(out.cpu().numpy(), expected,
                                          err_msg=f'seed {seed}: {src_hw} -> {input_hw}')
    assert not letterbox_torch._TRITON_FAILED


def test_a_failing_triton_letterbox_leaves_the_torch_letterbox(monkeypatch, caplog):
    class Broken:
        @staticmethod
        def letterbox(*args):
            raise RuntimeError('no compiler for this GPU')

    monkeypatch.setattr(letterbox_torch, 'triton_letterbox', lambda: Broken)
    monkeypatch.setattr(letterbox_torch, '_TRITON_FAILED', [])
    bgr = _image((1080, 1920))
    transform = letterbox_transform((1080, 1920), INPUT_HW)
    letterbox = letterbox_torch.DeviceLetterbox(transform, 'cpu', use_triton=True)
    out = letterbox(torch.from_numpy(bgr), torch.empty((1, 3) + INPUT_HW))
    assert 'no compiler for this GPU' in caplog.text and letterbox_torch._TRITON_FAILED
    np.testing.assert_array_equal(out.numpy(), _numpy_input(bgr, transform))
    monkeypatch.setattr(letterbox_torch, 'triton_letterbox', lambda: None)
    with pytest.raises(ModuleNotFoundError, match='needs Triton'):
        letterbox_torch.DeviceLetterbox(transform, 'cpu', use_triton=True)


def test_torch_letterbox_rejects_mismatched_shapes():
    transform = letterbox_transform((300, 500), INPUT_HW)
    with pytest.raises(ValueError):
        letterbox_torch.letterbox_to_input(torch.zeros((500, 300, 3), dtype=torch.uint8),
                                           transform, torch.empty((1, 3) + INPUT_HW))
    with pytest.raises(ValueError):
        letterbox_torch.letterbox_to_input(torch.zeros((300, 500, 3), dtype=torch.uint8),
                                           transform, torch.empty((1, 3, 320, 320)))
    letterbox = letterbox_torch.DeviceLetterbox(letterbox_transform((1080, 1920), INPUT_HW), 'cpu')
    with pytest.raises(ValueError):
        letterbox(torch.zeros((361, 1920, 3), dtype=torch.uint8), torch.empty((1, 3) + INPUT_HW))


def _random_boxes(rng, count, spread=400.0):
    xy = rng.uniform(0, spread, (count, 2))
    return np.c_[xy, xy + rng.uniform(5, 150, (count, 2))].astype(np.float32)


def _nms_functions():
    functions = [('greedy', postprocess_torch.greedy_nms)]
    if postprocess_torch.torchvision_nms() is not None:
        functions.append(('torchvision', postprocess_torch.torchvision_nms()))
    return functions


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('seed', range(6))
def test_torch_nms_equals_numpy_nms(device, seed):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 400)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    expected = np_post.nms_indices(boxes, scores, 0.45)
    for name, nms in _nms_functions():
        kept = nms(torch.from_numpy(boxes).to(device), torch.from_numpy(scores).to(device), 0.45)
        assert kept.device.type == device and kept.dtype == torch.int64, name
        assert kept.cpu().tolist() == expected.tolist(), name
    first = postprocess_torch.nms_indices(torch.from_numpy(boxes).to(device),
                                          torch.from_numpy(scores).to(device), 0.45, 7)
    assert first.cpu().tolist() == expected[:7].tolist()


def test_greedy_nms_on_nothing_and_the_fallback_without_torchvision(monkeypatch):
    empty = postprocess_torch.greedy_nms(torch.zeros((0, 4)), torch.zeros((0,)), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0
    monkeypatch.setattr(postprocess_torch, 'torchvision_nms', lambda: None)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert postprocess_torch.nms_indices(boxes, scores, 0.45).tolist() == [1, 2]
    # IoU exactly 0.5 is kept, as in the numpy NMS.
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 20]], dtype=torch.float32)
    assert postprocess_torch.nms_indices(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


def _raw_prediction(rng, anchors, classes):
    xy = rng.uniform(0, 640, (2, anchors))
    wh = rng.uniform(4, 200, (2, anchors))
    scores = rng.uniform(0, 1, (classes, anchors)) ** 3
    return np.concatenate([xy, wh, scores]).astype(np.float32)[None]


CONFIGS = [NmsConfig(0.25, 0.45), NmsConfig(0.5, 0.7, agnostic=True),
           NmsConfig(0.1, 0.6, classes=(1,)), NmsConfig(0.25, 0.45, max_det=5),
           NmsConfig(0.0, 0.45)]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('classes, anchors', [(1, 2100), (2, 8400), (80, 8400)])
@pytest.mark.parametrize('config', CONFIGS, ids=repr)
def test_torch_postprocess_equals_numpy_on_raw_outputs(device, classes, anchors, config):
    rng = np.random.default_rng(classes * 1000 + anchors)
    if config.classes is not None and classes == 1:
        config = NmsConfig(config.conf_threshold, config.iou_threshold, classes=(0,))
    output = _raw_prediction(rng, anchors, classes)
    before = output.copy()
    transform = letterbox_transform((1080, 1920), INPUT_HW)
    expected = np_post.postprocess({'o': output}, OutputLayout.RAW, config, transform)
    tensor = torch.from_numpy(output).to(device)
    ours = postprocess_torch.postprocess({'o': tensor}, OutputLayout.RAW, config, transform)
    assert len(expected) > 0
    assert ours.class_ids.tolist() == expected.class_ids.tolist()
    np.testing.assert_allclose(ours.scores, expected.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.boxes, expected.boxes, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(tensor.cpu().numpy(), before)


@pytest.mark.parametrize('device', DEVICES)
def test_torch_postprocess_float16_raw_output(device):
    output = _raw_prediction(np.random.default_rng(9), 8400, 2).astype(np.float16)
    config = NmsConfig(0.25, 0.45)
    expected = np_post.postprocess({'o': output}, OutputLayout.RAW, config,
                                   letterbox_transform(INPUT_HW, INPUT_HW))
    ours = postprocess_torch.postprocess({'o': torch.from_numpy(output).to(device)},
                                         OutputLayout.RAW, config,
                                         letterbox_transform(INPUT_HW, INPUT_HW))
    assert ours.class_ids.tolist() == expected.class_ids.tolist()
    np.testing.assert_allclose(ours.boxes, expected.boxes, atol=1e-3)


@pytest.mark.parametrize('device', DEVICES)
def test_torch_postprocess_end_to_end_and_efficient_nms(device):
    rng = np.random.default_rng(4)
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, :40, :4] = _random_boxes(rng, 40)
    rows[0, :40, 4] = rng.uniform(0, 1, 40)
    rows[0, :40, 5] = rng.integers(0, 2, 40)
    efficient = {'num_dets': np.array([[40]], np.int32), 'det_boxes': rows[:, :, :4].copy(),
                 'det_scores': rows[:, :, 4].copy(),
                 'det_classes': rows[:, :, 5].astype(np.int32)}
    transform = letterbox_transform((720, 1280), INPUT_HW)
    config = NmsConfig(0.3, classes=(1,), max_det=10)
    for layout, outputs in ((OutputLayout.END_TO_END, {'output0': rows}),
                            (OutputLayout.EFFICIENT_NMS, efficient)):
        expected = np_post.postprocess(outputs, layout, config, transform)
        tensors = {name: torch.from_numpy(array).to(device) for name, array in outputs.items()}
        ours = postprocess_torch.postprocess(tensors, layout, config, transform)
        assert len(expected) > 0
        np.testing.assert_array_equal(ours.boxes, expected.boxes)
        np.testing.assert_array_equal(ours.scores, expected.scores)
        np.testing.assert_array_equal(ours.class_ids, expected.class_ids)
