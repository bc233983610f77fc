"""Write test/fixtures/ultralytics_reference.json: what Ultralytics itself detects.

The reference pipeline is Ultralytics' own code: `LetterBox` -> the default ONNX model through
onnxruntime (a default session, as Ultralytics' AutoBackend makes it) -> `non_max_suppression`
(with torchvision imported, as in `YOLO.predict`) -> `scale_boxes`. It runs on the sample
images and on NUM_FRAMES generated frames, for each of CONFIGS; for the samples and every
tenth frame it also checks that `YOLO(model).predict` gives the same result.

Ultralytics is not a project dependency; run this from a separate venv:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch torchvision ultralytics onnxruntime opencv-python-headless
    /tmp/refvenv/bin/python tools/make_reference_fixtures.py

The frame generator (`generate_frame`) needs only numpy and OpenCV: the parity test imports
it from this file and rebuilds the same frames from the seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a venv without the package
    sys.path.insert(0, str(REPO_ROOT))

from human_detector_ros.assets import default_model_path, sample_image_path  # noqa: E402

GENERATOR_VERSION = 1
SEED = 20250601
NUM_FRAMES = 200
INPUT_HW = (640, 640)
PREDICT_CHECK_EVERY = 10
SAMPLE_NAMES = ('astronaut.png', 'camera.png', 'coffee.png')
PERSON_SAMPLES = ('astronaut.png', 'camera.png')
FIXTURE_PATH = REPO_ROOT / 'test' / 'fixtures' / 'ultralytics_reference.json'
CONFIGS: Tuple[Dict[str, Any], ...] = (
    {'conf': 0.25, 'iou': 0.45, 'agnostic': False, 'classes': None, 'max_det': 300},
    {'conf': 0.25, 'iou': 0.7, 'agnostic': False, 'classes': None, 'max_det': 300},
    {'conf': 0.5, 'iou': 0.45, 'agnostic': False, 'classes': None, 'max_det': 300},
    {'conf': 0.5, 'iou': 0.7, 'agnostic': True, 'classes': None, 'max_det': 300},
    {'conf': 0.25, 'iou': 0.45, 'agnostic': True, 'classes': None, 'max_det': 300},
    {'conf': 0.25, 'iou': 0.7, 'agnostic': False, 'classes': [1], 'max_det': 300},
    {'conf': 0.25, 'iou': 0.45, 'agnostic': False, 'classes': None, 'max_det': 2},
)
# (height, width) of the first frames; the rest are drawn at random.
FIXED_SIZES: Tuple[Tuple[int, int], ...] = (
    (23, 17), (17, 23), (2160, 3840), (3840, 2160), (1080, 1920), (720, 1280), (480, 640),
    (640, 640), (640, 480), (1, 3000), (3000, 2), (641, 639), (333, 999), (1999, 601),
)
SIZE_RANGES: Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...] = (
    ((8, 64), (8, 64)),          # tiny
    ((65, 480), (65, 480)),      # small, mostly odd
    ((400, 1400), (400, 1400)),  # medium
    ((900, 2600), (120, 900)),   # tall
    ((120, 900), (900, 3840)),   # wide
    ((1000, 2160), (1500, 3840)),  # large, up to 4K
)


def load_samples() -> Dict[str, np.ndarray]:
    """The sample images as OpenCV loads them: HxWx3 uint8 BGR (grey images as 3 channels)."""
    images = {}
    for name in SAMPLE_NAMES:
        image = cv2.imread(str(sample_image_path(name)), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'cannot read sample image {sample_image_path(name)}')
        images[name] = image
    return images


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's shape and C-order bytes."""
    digest = hashlib.sha256(repr(tuple(array.shape)).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def frame_size(rng: np.random.Generator, index: int) -> Tuple[int, int]:
    if index < len(FIXED_SIZES):
        return FIXED_SIZES[index]
    (h_lo, h_hi), (w_lo, w_hi) = SIZE_RANGES[int(rng.integers(len(SIZE_RANGES)))]
    return int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))


def _background(rng: np.random.Generator, height: int, width: int,
                samples: Mapping[str, np.ndarray]) -> np.ndarray:
    kind = int(rng.integers(4))
    if kind == 0:
        return np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    if kind == 1:
        start, stop = rng.integers(0, 256, (2, 3))
        ramp = np.linspace(0.0, 1.0, width)[None, :, None]
        row = (start + (stop.astype(np.float64) - start) * ramp).astype(np.uint8)
        return np.repeat(row, height, axis=0)
    if kind == 2:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.resize(samples['coffee.png'], (width, height), interpolation=cv2.INTER_LINEAR)


def _paste(rng: np.random.Generator, canvas: np.ndarray, sample: np.ndarray) -> None:
    src_h, src_w = sample.shape[:2]
    crop_h = int(rng.integers(src_h // 2, src_h + 1))
    crop_w = int(rng.integers(src_w // 2, src_w + 1))
    top = int(rng.integers(0, src_h - crop_h + 1))
    left = int(rng.integers(0, src_w - crop_w + 1))
    patch = sample[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    height, width = canvas.shape[:2]
    scale = min(height / crop_h, width / crop_w) * float(rng.uniform(0.3, 1.0))
    new_w, new_h = max(1, round(crop_w * scale)), max(1, round(crop_h * scale))
    patch = cv2.resize(np.ascontiguousarray(patch), (new_w, new_h),
                       interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        patch = np.clip(patch.astype(np.float32) * float(rng.uniform(0.5, 1.4)), 0, 255)
        patch = patch.astype(np.uint8)
    y = int(rng.integers(-new_h // 4, height - new_h + new_h // 4 + 1))
    x = int(rng.integers(-new_w // 4, width - new_w + new_w // 4 + 1))
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + new_h, height), min(x + new_w, width)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]


def generate_frame(index: int, samples: Mapping[str, np.ndarray], seed: int = SEED) -> np.ndarray:
    """Frame `index`: HxWx3 uint8 BGR, samples (mostly people) pasted on a background.

    Deterministic for (seed, index, GENERATOR_VERSION) with the same numpy and OpenCV.
    """
    rng = np.random.default_rng([seed, GENERATOR_VERSION, index])
    height, width = frame_size(rng, index)
    canvas = _background(rng, height, width, samples)
    for _ in range(int(rng.integers(1, 4))):
        pool = PERSON_SAMPLES if rng.random() < 0.85 else SAMPLE_NAMES
        _paste(rng, canvas, samples[pool[int(rng.integers(len(pool)))]])
    return canvas


def _rows(detections: Any) -> List[List[float]]:
    rows = []
    for x1, y1, x2, y2, score, cls in detections.cpu().numpy().tolist():
        rows.append([round(x1, 4), round(y1, 4), round(x2, 4), round(y2, 4),
                     round(score, 7), int(cls)])
    return rows


class Reference:
    """Ultralytics' pipeline on one ONNX session; `run(bgr)` -> rows per config."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime
        import torchvision  # noqa: F401  (Ultralytics' NMS uses torchvision.ops.nms if imported)
        from ultralytics.data.augment import LetterBox

        self.session = onnxruntime.InferenceSession(str(model_path),
                                                    providers=['CPUExecutionProvider'])
        self.letterbox = LetterBox(INPUT_HW, auto=False, center=True, scaleup=True, stride=32)

    def run(self, bgr: np.ndarray) -> Tuple[str, List[List[List[float]]]]:
        import torch
        from ultralytics.utils import ops
        try:
            from ultralytics.utils.nms import non_max_suppression
        except ImportError:  # Ultralytics < 8.3.160 keeps it in ops
            from ultralytics.utils.ops import non_max_suppression

        letterboxed = self.letterbox(image=bgr)
        images = torch.from_numpy(letterboxed).unsqueeze(0).permute(0, 3, 1, 2).contiguous()
        images = images.flip(1).float().div_(255)
        (raw,) = self.session.run(None, {self.session.get_inputs()[0].name: images.numpy()})
        prediction = torch.from_numpy(raw)
        results = []
        for config in CONFIGS:
            (detections,) = non_max_suppression(
                prediction.clone(), config['conf'], config['iou'], config['classes'],
                config['agnostic'], max_det=config['max_det'])
            detections[:, :4] = ops.scale_boxes(images.shape[2:], detections[:, :4], bgr.shape)
            results.append(_rows(detections))
        return array_sha256(letterboxed), results


def _check_predict(model: Any, bgr: np.ndarray, results: Sequence[List[List[float]]],
                   label: str) -> None:
    for config, rows in zip(CONFIGS, results):
        (result,) = model.predict(bgr, imgsz=INPUT_HW, conf=config['conf'], iou=config['iou'],
                                  agnostic_nms=config['agnostic'], classes=config['classes'],
                                  max_det=config['max_det'], verbose=False)
        predicted = np.concatenate([result.boxes.xyxy.cpu().numpy(),
                                    result.boxes.conf.cpu().numpy()[:, None],
                                    result.boxes.cls.cpu().numpy()[:, None]], axis=1)
        expected = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        if predicted.shape != expected.shape or not np.allclose(predicted, expected, atol=1e-3):
            raise AssertionError(f'{label} {config}: YOLO.predict gives {predicted.tolist()}, '
                                 f'the reference pipeline {expected.tolist()}')


def _entry(source: str, bgr: np.ndarray, reference: Reference) -> Tuple[Dict[str, Any], Any]:
    letterbox_sha256, results = reference.run(bgr)
    return {'source': source, 'hw': list(bgr.shape[:2]), 'image_sha256': array_sha256(bgr),
            'letterbox_sha256': letterbox_sha256, 'detections': results}, results


def build(num_frames: int) -> Dict[str, Any]:
    """Run the reference pipeline on the samples and frames; the fixture as a dict."""
    import onnxruntime
    import torch
    import torchvision
    import ultralytics
    from ultralytics import YOLO

    model_path = default_model_path()
    reference = Reference(model_path)
    model = YOLO(str(model_path), task='detect')
    samples = load_samples()
    images = []
    for name in SAMPLE_NAMES:
        entry, results = _entry(f'sample:{name}', samples[name], reference)
        _check_predict(model, samples[name], results, name)
        images.append(entry)
    for index in range(num_frames):
        frame = generate_frame(index, samples)
        entry, results = _entry(f'frame:{index}', frame, reference)
        if index % PREDICT_CHECK_EVERY == 0:
            _check_predict(model, frame, results, f'frame {index}')
        images.append(entry)
        print(f'frame {index} {frame.shape[1]}x{frame.shape[0]}: '
              f'{[len(rows) for rows in results]}', flush=True)
    return {
        'description': 'Ultralytics LetterBox -> ONNX Runtime -> non_max_suppression -> '
                       'scale_boxes; rows x1, y1, x2, y2 (source px), score, class per config',
        'generator': 'tools/make_reference_fixtures.py',
        'generator_version': GENERATOR_VERSION,
        'seed': SEED,
        'num_frames': num_frames,
        'predict_checked_every': PREDICT_CHECK_EVERY,
        'ultralytics_version': ultralytics.__version__,
        'onnxruntime_version': onnxruntime.__version__,
        'torch_version': torch.__version__,
        'torchvision_version': torchvision.__version__,
        'opencv_version': cv2.__version__,
        'numpy_version': np.__version__,
        'model_file': model_path.name,
        'model_sha256': hashlib.sha256(model_path.read_bytes()).hexdigest(),
        'input_hw': list(INPUT_HW),
        'configs': list(CONFIGS),
        'images': images,
    }


def write_fixture(fixture: Mapping[str, Any], path: Path) -> None:
    """JSON with one image per line, so a regenerated fixture diffs readably."""
    header = {key: value for key, value in fixture.items() if key != 'images'}
    lines = [json.dumps(header, indent=1)[:-2] + ',', ' "images": [']
    entries = [json.dumps(entry, separators=(',', ':')) for entry in fixture['images']]
    lines.append(',\n'.join(entries))
    lines.append(']}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=NUM_FRAMES)
    parser.add_argument('--output', type=Path, default=FIXTURE_PATH)
    args = parser.parse_args(argv)
    write_fixture(build(args.frames), args.output)
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
