"""Device time of the fixed-size NMS and the device letterbox, each replayed as a CUDA graph.

Every implementation is captured once and its graph replayed `--replays` times after
`--warmup` replays; each replay is timed with CUDA events on its stream, and the figure is the
median (p90 beside it) in milliseconds. Before timing, every result is checked: the NMS rows
against the numpy NMS, the letterboxed bytes against cv2.

NMS inputs are synthetic head outputs [4 + nc, 8400] (640x640 input, nc 2 as the default model
or 80 as COCO) with a given number of candidates: jittered boxes around a few objects, the
regime of real frames (0 to 60 candidates), and a dense one (~400). Letterbox inputs are random
uint8 frames already on the device (the upload is not part of it).

`--baseline-dir DIR` also times an earlier version: DIR holds that version's
human_detector_ros/gpu_pipeline.py (or device_nms.py) and letterbox_torch.py, e.g.

    mkdir -p /tmp/old && for f in gpu_pipeline letterbox_torch; do
        git show a79823c:human_detector_ros/$f.py > /tmp/old/$f.py; done
    python bench/bench_kernels.py --baseline-dir /tmp/old --out results/kernels_h200.json
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from human_detector_ros import device_nms  # noqa: E402
from human_detector_ros import postprocess as np_post  # noqa: E402
from human_detector_ros.device_nms import NMS_CAPACITY, NMS_ROUNDS, NmsLimits  # noqa: E402
from human_detector_ros.letterbox import letterbox, letterbox_transform  # noqa: E402
from human_detector_ros.letterbox_torch import (  # noqa: E402
    DeviceLetterbox, triton_letterbox)
from human_detector_ros.postprocess import NmsConfig  # noqa: E402

ANCHORS = 8400
INPUT_HW = (640, 640)
FRAME_SIZES = ((720, 1280), (1080, 1920), (2160, 3840))
# (name, classes, objects, boxes per object, stray candidates, dtype, conf)
NMS_CASES = (
    ('2 classes, no candidates', 2, 0, 0, 0, np.float32, 0.25),
    ('2 classes, ~12 candidates', 2, 2, 5, 2, np.float32, 0.25),
    ('2 classes, ~60 candidates', 2, 4, 13, 8, np.float32, 0.25),
    ('2 classes, ~60 candidates, fp16', 2, 4, 13, 8, np.float16, 0.25),
    ('80 classes, ~60 candidates', 80, 4, 13, 8, np.float32, 0.25),
    ('2 classes, dense ~400 candidates', 2, 16, 20, 80, np.float32, 0.05),
)


def head_output(rng: np.random.Generator, classes: int, objects: int, per_object: int,
                strays: int) -> np.ndarray:
    """[4 + nc, ANCHORS] float32: boxes clustered around `objects`, plus stray candidates."""
    xy = rng.uniform(0, 640, (2, ANCHORS))
    wh = rng.uniform(4, 200, (2, ANCHORS))
    scores = rng.uniform(0, 0.04, (classes, ANCHORS))
    chosen = rng.permutation(ANCHORS)
    stray_ids, chosen = chosen[:strays], chosen[strays:]
    scores[rng.integers(0, classes, strays), stray_ids] = rng.uniform(0.3, 0.6, strays)
    for index in range(objects):
        ids = chosen[index * per_object:(index + 1) * per_object]
        centre, size = rng.uniform(50, 590, 2), rng.uniform(20, 300, 2)
        xy[:, ids] = centre[:, None] + rng.normal(0, size[:, None] / 8, (2, per_object))
        wh[:, ids] = size[:, None] * rng.uniform(0.8, 1.2, (2, per_object))
        scores[rng.integers(0, classes), ids] = rng.uniform(0.3, 0.95, per_object)
    return np.concatenate([xy, wh, scores]).astype(np.float32)


def graph_of(function: Callable[[], Any], stream: Any) -> Tuple[Callable[[], Any], Any]:
    """(replay of one call of `function`, its result): a CUDA graph captured after warm-up
    calls on `stream`; on the CPU (`--device cpu`, a check of this script) the call itself."""
    if stream is None:
        return function, function()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            function()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        result = function()
    return graph.replay, result


def replay_ms(replay: Callable[[], Any], stream: Any, replays: int, warmup: int) -> List[float]:
    """Device time of each of `replays` replays, in milliseconds (CUDA events)."""
    if stream is None:
        times = []
        for _ in range(replays):
            start = time.perf_counter()
            replay()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(replays)]
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            replay()
        for start, end in events:
            start.record(stream)
            replay()
            end.record(stream)
    stream.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def synchronize(stream: Any) -> None:
    if stream is not None:
        stream.synchronize()


def summary(times: List[float]) -> Dict[str, float]:
    return {'median_ms': round(float(np.median(times)), 4),
            'p90_ms': round(float(np.percentile(times, 90)), 4)}


def load_module(path: pathlib.Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nms_implementations(baseline: Optional[pathlib.Path]) -> Dict[str, Callable[..., Any]]:
    """name -> (prediction tensor, limits (NmsLimits of that version)) -> packed rows."""
    implementations: Dict[str, Callable[..., Any]] = {}
    if baseline is not None:
        source = next(path for path in (baseline / 'device_nms.py', baseline / 'gpu_pipeline.py')
                      if path.is_file())
        old = load_module(source, 'baseline_nms')
        implementations['baseline (torch)'] = (
            old.NmsLimits,
            lambda prediction, limits: old.fixed_size_nms(prediction, limits, NMS_CAPACITY,
                                                          NMS_ROUNDS))
    implementations['torch'] = (
        NmsLimits, lambda prediction, limits: device_nms.torch_nms(prediction, limits,
                                                                   NMS_CAPACITY, NMS_ROUNDS))
    kernels = device_nms.triton_nms()
    if kernels is not None:
        implementations['triton'] = (
            NmsLimits, lambda prediction, limits: device_nms.fixed_size_nms(
                prediction, limits, NMS_CAPACITY, NMS_ROUNDS))
        default = kernels.SUPPRESS_WARPS
        for warps in (1, 2, 4):
            if warps != default:
                implementations[f'triton, {warps} warps'] = (
                    NmsLimits, functools.partial(triton_with_warps, kernels, warps))
    return implementations


def triton_with_warps(kernels: Any, warps: int, prediction: Any, limits: Any) -> Any:
    """The Triton NMS with its greedy kernel on `warps` warps (a variant to compare)."""
    default, kernels.SUPPRESS_WARPS = kernels.SUPPRESS_WARPS, warps
    try:
        return device_nms.fixed_size_nms(prediction, limits, NMS_CAPACITY, NMS_ROUNDS)
    finally:
        kernels.SUPPRESS_WARPS = default


def bench_nms(args: argparse.Namespace, stream: torch.cuda.Stream) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, classes, objects, per_object, strays, dtype, conf in NMS_CASES:
        prediction = head_output(rng, classes, objects, per_object, strays)
        # What the engine gives: values already in `dtype`; numpy compares them as float32.
        prediction = prediction.astype(dtype)
        config = NmsConfig(conf, 0.45)
        expected = np_post.non_max_suppression(prediction.astype(np.float32), config)
        candidates = int((prediction[4:].astype(np.float32).max(0) > conf).sum())
        row: Dict[str, Any] = {'case': name, 'candidates': candidates, 'kept': len(expected)}
        for label, (limits_type, nms) in nms_implementations(args.baseline_dir).items():
            tensor = torch.from_numpy(prediction).to(args.device)
            limits = limits_type(classes, tensor.device)
            limits.apply(config)
            try:
                replay, packed = graph_of(lambda: nms(tensor, limits), stream)
                replay()
                synchronize(stream)
            except Exception as error:  # one broken implementation must not end the run
                row[label] = {'error': repr(error)}
                continue
            result = packed.cpu().numpy()
            valid = result[0, 1] <= NMS_CAPACITY and result[0, 2] == 0
            exact = valid and np.array_equal(result[1:1 + int(result[0, 0])], expected)
            row[label] = dict(summary(replay_ms(replay, stream, args.replays, args.warmup)),
                              exact=bool(exact), fallback=not valid)
        rows.append(row)
        print(json.dumps(row))
    return rows


def bench_letterbox(args: argparse.Namespace, stream: torch.cuda.Stream
                    ) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(args.seed + 1)
    old = (load_module(args.baseline_dir / 'letterbox_torch.py', 'baseline_letterbox')
           if args.baseline_dir is not None else None)
    rows = []
    for hw in FRAME_SIZES:
        bgr = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
        transform = letterbox_transform(hw, INPUT_HW)
        expected = letterbox(bgr, transform)
        frame = torch.from_numpy(bgr).to(args.device)
        row: Dict[str, Any] = {'frame': f'{hw[1]}x{hw[0]}'}
        for dtype in (torch.float16, torch.float32):
            out = torch.empty((1, 3) + INPUT_HW, dtype=dtype, device=args.device)
            implementations = {
                'torch ops': DeviceLetterbox(transform, frame.device, use_triton=False)}
            if triton_letterbox() is not None:
                implementations['triton'] = DeviceLetterbox(transform, frame.device,
                                                            use_triton=True)
            if old is not None:
                implementations['baseline (float)'] = (
                    lambda image, into: old.letterbox_to_input(image, transform, into))
            for label, function in implementations.items():
                try:
                    replay, _ = graph_of(lambda: function(frame, out), stream)
                    replay()
                    synchronize(stream)
                except Exception as error:  # one broken implementation must not end the run
                    row[f'{label} {str(dtype)[6:]}'] = {'error': repr(error)}
                    continue
                ours = (out[0].float() * 255).round().to(torch.uint8).flip(0).permute(1, 2, 0)
                differing = int((ours.cpu().numpy() != expected).sum())
                row[f'{label} {str(dtype)[6:]}'] = dict(
                    summary(replay_ms(replay, stream, args.replays, args.warmup)),
                    bytes_differing_from_cv2=differing)
        rows.append(row)
        print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--replays', type=int, default=1000)
    parser.add_argument('--warmup', type=int, default=50)
    parser.add_argument('--seed', type=int, default=20261130)
    parser.add_argument('--baseline-dir', type=pathlib.Path)
    parser.add_argument('--out', type=pathlib.Path)
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'),
                        help='cpu: eager, wall time; only to check this script')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('bench_kernels.py needs a CUDA device (or --device cpu to check the script)')
    triton = device_nms.triton_nms()
    stream = torch.cuda.Stream() if args.device == 'cuda' else None
    with torch.inference_mode():
        results = {
            'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='minutes'),
            'gpu': torch.cuda.get_device_name() if stream else 'cpu',
            'python': platform.python_version(),
            'torch': torch.__version__, 'cuda': torch.version.cuda,
            'triton': None if triton is None else sys.modules['triton'].__version__,
            'opencv': cv2.__version__, 'numpy': np.__version__,
            'replays': args.replays, 'nms_capacity': NMS_CAPACITY,
            'nms': bench_nms(args, stream), 'letterbox': bench_letterbox(args, stream)}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
    main()
