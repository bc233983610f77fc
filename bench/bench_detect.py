"""Latency of HumanDetector beside its engine alone, the seed's pipeline and Ultralytics.

Everything in one process and one run, on frames of real sample images (people) at 1280x720,
1920x1080 and 3840x2160. Each figure is the wall time of whole calls that end with their
results on the host (GPU work synchronised), from `--frames` calls after `--warmup` calls.

GPU, TorchScript exports of the default weights (and Ultralytics on the weights themselves):
    python bench/bench_detect.py --torchscript best_fp16.torchscript --half \
        --weights best.pt --out results_gpu.json
CPU, the default ONNX model through ONNX Runtime:
    python bench/bench_detect.py --onnx --frames 30 --memory-frames 300 --out results_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.seed_pipeline import SeedPipeline, torch_forward  # noqa: E402
from human_detector_ros import assets  # noqa: E402
from human_detector_ros.detector import HumanDetector  # noqa: E402

SIZES = ((720, 1280), (1080, 1920), (2160, 3840))
PEOPLE = ('camera.png', 'astronaut.png')


def people_frame(hw: Tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 BGR: the sample portraits side by side, scaled to the frame height."""
    height, width = hw
    tiles = [cv2.resize(cv2.imread(str(assets.sample_image_path(name)), cv2.IMREAD_COLOR),
                        (height, height), interpolation=cv2.INTER_LINEAR) for name in PEOPLE]
    row = np.concatenate(tiles * (width // (2 * height) + 1), axis=1)
    return np.ascontiguousarray(row[:, :width])


def timed(call: Callable[[], Any], frames: int, warmup: int) -> List[float]:
    """Wall time of `frames` calls after `warmup` calls, in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: List[float]) -> Dict[str, float]:
    return {'median_ms': float(np.median(times)), 'p90_ms': float(np.percentile(times, 90)),
            'mean_ms': float(np.mean(times)), 'n': len(times)}


def rss_mib() -> float:
    """Resident set size of this process (VmRSS), MiB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def versions() -> Dict[str, Optional[str]]:
    found: Dict[str, Optional[str]] = {'python': platform.python_version(),
                                       'numpy': np.__version__, 'opencv': cv2.__version__}
    for module in ('torch', 'torchvision', 'onnxruntime', 'ultralytics'):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = None
    if found['torch'] is not None:
        import torch
        found['cuda'] = torch.version.cuda
        found['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return found


def stage_medians(timings: List[Any]) -> Dict[str, float]:
    return {name: float(np.median([getattr(t, name) for t in timings]))
            for name in ('preprocess_ms', 'infer_ms', 'postprocess_ms')}


def run_detector(detector: HumanDetector, frame: np.ndarray, frames: int, warmup: int
                 ) -> Dict[str, Any]:
    """The detector's figures on one frame: wall times, stage medians, what it found."""
    timings: List[Any] = []

    def call() -> None:
        detector(frame)
        timings.append(detector.last_timings)

    result = summary(timed(call, frames, warmup))
    result['stages'] = stage_medians(timings[warmup:])
    result['detections'] = len(detector(frame))
    return result


def memory_check(detector: HumanDetector, frames: List[np.ndarray], count: int
                 ) -> Dict[str, Any]:
    """Host RSS and torch CUDA memory before and after `count` frames (after 50 warm-up)."""
    torch = sys.modules.get('torch')
    cuda = torch is not None and detector.engine.device.startswith('cuda')

    def reading() -> Dict[str, float]:
        values = {'rss_mib': rss_mib()}
        if cuda:
            values['cuda_allocated_mib'] = torch.cuda.memory_allocated() / 2 ** 20
            values['cuda_reserved_mib'] = torch.cuda.memory_reserved() / 2 ** 20
        return values

    for index in range(50):
        detector(frames[index % len(frames)])
    before = reading()
    peak_rss = before['rss_mib']
    start = time.perf_counter()
    for index in range(count):
        detector(frames[index % len(frames)])
        if index % 500 == 0:
            peak_rss = max(peak_rss, rss_mib())
    seconds = time.perf_counter() - start
    after = reading()
    return {'frames': count, 'seconds': seconds, 'before': before, 'after': after,
            'peak_rss_mib': max(peak_rss, after['rss_mib']),
            'growth': {key: after[key] - before[key] for key in before}}


def sync_count(detector: HumanDetector, frame: np.ndarray, frames: int = 20) -> int:
    """Synchronising operations torch reports (sync debug mode) over `frames` calls."""
    import torch

    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for _ in range(frames):
                detector(frame)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(warning.message).lower() for warning in caught)


def replay_and_wait(graph: Any) -> None:
    import torch

    graph.replay()
    torch.cuda.synchronize()


def gpu_figures(path: pathlib.Path, args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    detector = HumanDetector(path, device=args.device, pipeline='torch')
    host_resize = HumanDetector(path, device=args.device, pipeline='torch', resize_on='host')
    pipeline = detector.torch_pipeline
    cuda = pipeline.cuda
    half = detector.input_dtype == np.float16
    figures: Dict[str, Any] = {
        'model': path.name, 'dtype': str(detector.input_dtype),
        'graphs': {'forward': pipeline._forward.graph is not None,
                   'nms': pipeline._decode.graph is not None}}

    def eager() -> None:
        detector.engine.infer_torch(pipeline.input)
        if cuda:
            torch.cuda.synchronize()

    engine = {'eager': summary(timed(eager, args.frames, args.warmup))}
    if pipeline._forward.graph is not None:
        engine['graph'] = summary(timed(lambda: replay_and_wait(pipeline._forward.graph),
                                        args.frames, args.warmup))
    figures['engine_alone'] = engine
    seed = SeedPipeline(torch_forward(torch.jit.load(str(path), map_location=args.device),
                                      args.device, half), detector.input_hw)
    ultralytics = None
    if args.weights is not None:
        from ultralytics import YOLO
        ultralytics = YOLO(str(args.weights))
    figures['sizes'] = {}
    for hw in SIZES:
        frame = people_frame(hw)
        size: Dict[str, Any] = {
            'detector': run_detector(detector, frame, args.frames, args.warmup),
            'detector_host_resize': run_detector(host_resize, frame, args.frames, args.warmup),
            'seed': summary(timed(lambda: seed(frame), args.frames, args.warmup))}
        size['seed']['detections'] = len(seed(frame)[1])
        if ultralytics is not None:
            def predict() -> Any:
                return ultralytics.predict(frame, half=half, device=args.device, conf=0.5,
                                           iou=0.45, verbose=False)
            size['ultralytics'] = summary(timed(predict, args.frames, args.warmup))
            size['ultralytics']['detections'] = len(predict()[0].boxes)
        ours = size['detector']['median_ms']
        size['ratios'] = {
            'detector_over_engine_eager': ours / engine['eager']['median_ms'],
            'seed_over_detector': size['seed']['median_ms'] / ours}
        if 'graph' in engine:
            size['ratios']['detector_over_engine_graph'] = ours / engine['graph']['median_ms']
        if ultralytics is not None:
            size['ratios']['ultralytics_over_detector'] = \
                size['ultralytics']['median_ms'] / ours
        figures['sizes'][f'{hw[1]}x{hw[0]}'] = size
        print(json.dumps({path.name: {f'{hw[1]}x{hw[0]}': size['ratios']}}), flush=True)
    frame = people_frame((1080, 1920))
    detector(frame)
    if cuda:
        figures['sync_operations_in_20_frames'] = sync_count(detector, frame)
        figures['graphs_alone_1080p'] = {
            name: summary(timed(lambda: replay_and_wait(graph), args.frames, args.warmup))
            for name, graph in (('letterbox', pipeline._stages[(1080, 1920)].letterbox.graph),
                                ('nms', pipeline._decode.graph)) if graph is not None}
    figures['nms_fallbacks'] = pipeline.fallbacks
    if args.memory_frames:
        figures['memory'] = memory_check(detector, [frame, frame[:, ::-1].copy()],
                                         args.memory_frames)
    return figures


def timed_in_turn(calls: Dict[str, Callable[[], Any]], frames: int, warmup: int
                  ) -> Dict[str, List[float]]:
    """Like `timed`, the calls taking turns, so that a busy machine slows them alike."""
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for index in range(warmup + frames):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if index >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def cpu_figures(args: argparse.Namespace) -> Dict[str, Any]:
    detector = HumanDetector(args.onnx or None, backend='onnxruntime', device='cpu')
    engine = detector.engine
    images = detector.preprocess(people_frame((1080, 1920)))[0].copy()
    output_name = engine.outputs[0].name
    seed = SeedPipeline(lambda blob: engine.infer(blob)[output_name], detector.input_hw)
    figures: Dict[str, Any] = {'model': engine.model_path.name,
                               'dtype': str(detector.input_dtype), 'sizes': {}}
    for hw in SIZES:
        frame = people_frame(hw)
        timings: List[Any] = []

        def ours() -> None:
            detector(frame)
            timings.append(detector.last_timings)

        times = timed_in_turn({'engine_alone': lambda: engine.infer(images), 'detector': ours,
                               'seed': lambda: seed(frame)}, args.frames, args.warmup)
        size: Dict[str, Any] = {name: summary(values) for name, values in times.items()}
        stages = size['detector']['stages'] = stage_medians(timings[args.warmup:])
        outside = stages['preprocess_ms'] + stages['postprocess_ms']
        size['outside_engine_share_of_stages'] = outside / (outside + stages['infer_ms'])
        size['outside_engine_share_of_wall'] = \
            1 - size['engine_alone']['median_ms'] / size['detector']['median_ms']
        figures['sizes'][f'{hw[1]}x{hw[0]}'] = size
        print(json.dumps({f'{hw[1]}x{hw[0]}': {
            'engine_ms': size['engine_alone']['median_ms'],
            'detector_ms': size['detector']['median_ms'], 'stages': stages,
            'share': size['outside_engine_share_of_stages']}}), flush=True)
    if args.memory_frames:
        frame = people_frame((1080, 1920))
        figures['memory'] = memory_check(detector, [frame, frame[:, ::-1].copy()],
                                         args.memory_frames)
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--torchscript', type=pathlib.Path, nargs='*', default=[],
                        help='TorchScript exports to run on the GPU')
    parser.add_argument('--weights', type=pathlib.Path,
                        help='Ultralytics .pt weights for YOLO(weights).predict()')
    parser.add_argument('--onnx', nargs='?', const='', default=None,
                        help='run the CPU figures on this ONNX model (default: the default one)')
    parser.add_argument('--device', default='cuda:0')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--memory-frames', type=int, default=5000)
    parser.add_argument('--cudnn-benchmark', action='store_true',
                        help='let cuDNN pick its fastest convolutions (a process-wide switch)')
    parser.add_argument('--out', type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    if args.cudnn_benchmark:
        import torch
        torch.backends.cudnn.benchmark = True
    report: Dict[str, Any] = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              'versions': versions(), 'machine': platform.machine(),
                              'args': {key: str(value) for key, value in vars(args).items()}}
    if args.onnx is not None:
        report['cpu'] = cpu_figures(args)
    report['gpu'] = [gpu_figures(path, args) for path in args.torchscript]
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
