"""TorchScript backend on real traced modules with a YOLO-shaped output [1, 4 + nc, N]."""
from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest

from human_detector_ros.assets import asset_path
from human_detector_ros.engines import detect_backend, load_engine
from human_detector_ros.engines.torchscript_engine import TorchScriptEngine
from human_detector_ros.errors import InferenceError, ModelLoadError

torch = pytest.importorskip('torch')  # the Jazzy tier has no torch
nn = torch.nn

CONFIG = {'description': 'tiny', 'stride': 32, 'task': 'detect', 'batch': 1,
          'imgsz': [640, 640], 'names': {'0': 'Normal', '1': 'Fall'}}
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device for PyTorch')


class TinyDetector(nn.Module):
    """[1, 3, H, W] -> [1, 4 + nc, (H / 32) * (W / 32)]: boxes in pixels, sigmoid scores."""

    def __init__(self, nc: int = 2, with_proto: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 4 + nc, kernel_size=32, stride=32)
        self.with_proto = with_proto

    def forward(self, x):
        y = self.head(x).flatten(2)
        out = torch.cat((y[:, :4] * 100 + 320, y[:, 4:].sigmoid()), 1)
        if self.with_proto:
            return out, x[:, :1, ::4, ::4]
        return out


def _export(path, module: nn.Module, hw=(640, 640), config=CONFIG, half=False):
    module = module.eval()
    example = torch.zeros((1, 3) + tuple(hw))
    if half:
        module, example = module.half(), example.half()
    traced = torch.jit.trace(module, example, strict=False)
    extra = {'config.txt': json.dumps(config)} if config is not None else {}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


@pytest.fixture
def tiny_path(tmp_path):
    return _export(tmp_path / 'tiny.torchscript', TinyDetector())


def test_load_metadata_specs_and_outputs_match_torch(tiny_path):
    images = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    expected = TinyDetector().eval()(torch.from_numpy(images)).detach().numpy()
    with load_engine(tiny_path) as engine:
        assert engine.backend == 'torchscript'
        assert engine.device == ('cuda:0' if torch.cuda.is_available() else 'cpu')
        assert engine.metadata.names == {0: 'Normal', 1: 'Fall'}
        assert engine.metadata.imgsz == (640, 640) and engine.metadata.stride == 32
        assert [(s.name, s.shape, s.dtype) for s in engine.inputs] == [
            ('images', (1, 3, 640, 640), np.float32)]
        assert [(s.name, s.shape, s.dtype) for s in engine.outputs] == [
            ('output0', (1, 6, 400), np.float32)]
        outputs = engine.infer(images)
        tensors = engine.infer_torch(torch.from_numpy(images))
    tolerance = dict(rtol=1e-4, atol=1e-3) if torch.cuda.is_available() else dict(atol=1e-5)
    assert list(outputs) == ['output0'] and isinstance(outputs['output0'], np.ndarray)
    np.testing.assert_allclose(outputs['output0'], expected, **tolerance)
    assert isinstance(tensors['output0'], torch.Tensor)
    np.testing.assert_allclose(tensors['output0'].cpu().numpy(), expected, **tolerance)


def test_imgsz_from_config_sets_input_shape(tmp_path):
    path = _export(tmp_path / 'wide.torchscript', TinyDetector(), (320, 480),
                   dict(CONFIG, imgsz=[320, 480]))
    with load_engine(path) as engine:
        assert engine.input_hw == (320, 480)
        assert engine.outputs[0].shape == (1, 6, 150)
        assert engine.infer(np.zeros((1, 3, 320, 480), np.float32))['output0'].shape == \
            (1, 6, 150)
        with pytest.raises(InferenceError, match=r'\[1, 3, 320, 480\]'):
            engine.infer(np.zeros((1, 3, 640, 640), np.float32))
        with pytest.raises(InferenceError):
            engine.infer_torch(torch.zeros(1, 3, 640, 640))


def test_without_config_metadata_is_empty(tmp_path):
    path = _export(tmp_path / 'bare.torchscript', TinyDetector(), config=None)
    with load_engine(path) as engine:
        assert engine.metadata.names == {} and engine.metadata.imgsz is None
        assert engine.input_hw == (640, 640)


def test_several_outputs_are_numbered(tmp_path):
    path = _export(tmp_path / 'seg.torchscript', TinyDetector(with_proto=True))
    engine = TorchScriptEngine(path, 'cpu')
    assert [(s.name, s.shape) for s in engine.outputs] == [
        ('output0', (1, 6, 400)), ('output1', (1, 1, 160, 160))]
    images = np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)
    np.testing.assert_array_equal(engine.infer(images)['output1'], images[:, :1, ::4, ::4])


def test_half_module_takes_and_gives_float16(tmp_path):
    path = _export(tmp_path / 'half.torchscript', TinyDetector(), half=True)
    images = np.random.default_rng(2).random((1, 3, 640, 640), dtype=np.float32)
    expected = TinyDetector().eval()(torch.from_numpy(images)).detach().numpy()
    with load_engine(path, device='cpu') as engine:
        assert engine.inputs[0].dtype == np.float16 and engine.outputs[0].dtype == np.float16
        result = engine.infer(images)['output0']
    assert result.dtype == np.float16
    np.testing.assert_allclose(result.astype(np.float32), expected, rtol=1e-2, atol=0.5)


def test_pt_extension_is_checked_by_content(tmp_path):
    scripted = _export(tmp_path / 'scripted.pt', TinyDetector())
    assert detect_backend(scripted) == 'torchscript'
    checkpoint = tmp_path / 'checkpoint.pt'
    torch.save({'model': TinyDetector().state_dict()}, str(checkpoint))
    with pytest.raises(ModelLoadError, match='PyTorch checkpoint') as error:
        load_engine(checkpoint)
    assert str(checkpoint) in str(error.value) and 'yolo export' in str(error.value)


@pytest.mark.skipif(not asset_path('default_weights').is_file(),
                    reason='best.pt (default_weights) not fetched')
def test_ultralytics_weights_are_not_torchscript():
    with pytest.raises(ModelLoadError, match='format=onnx'):
        load_engine(asset_path('default_weights'))


def test_truncated_and_damaged_archives(tmp_path, tiny_path):
    data = tiny_path.read_bytes()
    truncated = tmp_path / 'cut.torchscript'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelLoadError) as error:
        load_engine(truncated)
    assert str(truncated) in str(error.value)
    with zipfile.ZipFile(tiny_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    broken = tmp_path / 'broken.torchscript'
    with zipfile.ZipFile(broken, 'w') as archive:
        for name, content in members.items():
            archive.writestr(name, b'garbage' if name.endswith('data.pkl') else content)
    with pytest.raises(ModelLoadError, match='cannot load TorchScript') as error:
        load_engine(broken)
    assert str(broken) in str(error.value)


def test_module_that_fails_on_the_input_shape(tmp_path):
    class NeedsFourChannels(nn.Module):
        def forward(self, x):
            return x.reshape(1, 7, -1)

    path = tmp_path / 'odd.torchscript'
    torch.jit.save(torch.jit.script(NeedsFourChannels()), str(path))
    with pytest.raises(ModelLoadError, match=r'fails on a \[1, 3, 640, 640\]'):
        load_engine(path)


def test_no_torch_installed(monkeypatch, tiny_path):
    monkeypatch.setitem(sys.modules, 'torch', None)
    with pytest.raises(ModelLoadError, match='PyTorch is not installed'):
        load_engine(tiny_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_asked_without_cuda(tiny_path):
    with pytest.raises(ModelLoadError, match='cuda:0') as error:
        load_engine(tiny_path, device='cuda')
    assert str(tiny_path) in str(error.value)


@CUDA
@pytest.mark.parametrize('half', [False, True], ids=['float32', 'float16'])
def test_cuda_infer_torch_stays_on_the_device(tmp_path, half):
    path = _export(tmp_path / 'gpu.torchscript', TinyDetector(), half=half)
    images = torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(3))
    expected = TinyDetector().eval()(images).detach().numpy()
    with load_engine(path, device='cuda:0') as engine:
        assert engine.device == 'cuda:0'
        tensors = engine.infer_torch(images.cuda())
        assert tensors['output0'].is_cuda
        assert tensors['output0'].dtype == (torch.float16 if half else torch.float32)
        numpy_result = engine.infer(images.numpy())['output0']
    tolerance = dict(rtol=1e-2, atol=0.5) if half else dict(rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(tensors['output0'].float().cpu().numpy(), expected, **tolerance)
    np.testing.assert_allclose(numpy_result.astype(np.float32), expected, **tolerance)
    with pytest.raises(ModelLoadError, match='cuda:99'):
        load_engine(path, device='cuda:99')
