"""Latency of HumanDetector beside its engine alone, the seed's pipeline and Ultralytics.

Everything in one process and one run, on frames of real sample images (people) at 1280x720,
1920x1080 and 3840x2160. Each figure is the wall time of whole calls that end with their
results on the host (GPU work synchronised), from `--frames` calls after `--warmup` calls.

GPU: the default weights exported by Ultralytics to TorchScript fp16 and fp32, each run through
the TorchScript backend and behind the GPU stand-in for TensorRT through the TensorRT backend,
beside Ultralytics' own predict() on the weights:
    python bench/bench_detect.py --export-weights best.pt --tensorrt-standin \\
        --out results_gpu.json
(or `--torchscript a.torchscript b.torchscript --weights best.pt` for exports at hand).
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
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.seed_pipeline import SeedPipeline, torch_forward  # noqa: E402
from human_detector_ros import assets  # noqa: E402
from human_detector_ros.detector import HumanDetector  # noqa: E402
from human_detector_ros.gpu_pipeline import RowCopy  # noqa: E402
from human_detector_ros.letterbox import letterbox_transform  # noqa: E402
from human_detector_ros.letterbox_torch import DeviceLetterbox  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIZES = ((720, 1280), (1080, 1920), (2160, 3840))
INPUT_HW = (640, 640)
PEOPLE = ('camera.png', 'astronaut.png')
STANDIN_VERSION = '10.3.0'
SYNCHRONOUS_COPIES = ('cudaMemcpy', 'cudaMemcpy2D', 'cudaMemset', 'cuMemcpy', 'cuMemcpyHtoD_v2',
                      'cuMemcpyDtoH_v2')


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


def driver_version() -> Optional[str]:
    """The NVIDIA driver version nvidia-smi reports, or None."""
    import subprocess

    try:
        return subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], check=True,
            stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


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


def cuda_api_calls(detector: HumanDetector, frame: np.ndarray, frames: int = 20
                   ) -> Dict[str, Any]:
    """CUDA runtime/driver API calls per frame, as the profiler (CUPTI) records them.

    Counts every call whoever makes it (torch, the engine, TensorRT); host_syncs_per_frame
    counts the calls that block the host: *Synchronize and synchronous cudaMemcpy.
    """
    from torch.profiler import profile, ProfilerActivity

    def recorded(count: int) -> Dict[str, int]:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            for _ in range(count):
                detector(frame)
        calls: Dict[str, int] = {}
        for event in profiler.events():
            if event.name.startswith('cu') and not event.name.startswith('cutlass'):
                calls[event.name] = calls.get(event.name, 0) + 1
        return calls

    def syncs(calls: Dict[str, int]) -> int:
        return sum(count for name, count in calls.items()
                   if name.endswith('Synchronize') or name in SYNCHRONOUS_COPIES)

    detector(frame)
    empty, calls = recorded(0), recorded(frames)
    return {'per_frame': {name: count / frames for name, count in sorted(calls.items())},
            'profiler_alone': empty,
            'host_syncs_per_frame': (syncs(calls) - syncs(empty)) / frames, 'frames': frames}


def replay_and_wait(graph: Any) -> None:
    import torch

    graph.replay()
    torch.cuda.synchronize()


def upload_figures(args: argparse.Namespace) -> Dict[str, Any]:
    """The frame upload alone: the whole frame (torch copy into pinned memory + DMA) and, as
    the pipeline does it, only the rows its letterbox reads (`RowCopy` into pinned memory +
    DMA; 'rows' holds the figure and the row count).

    Also, for comparison only, the whole frame's DMA split in two halves on two streams.
    """
    import torch

    figures: Dict[str, Any] = {}
    for hw in SIZES:
        frame = people_frame(hw)
        pinned = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
        device = torch.empty(frame.shape, dtype=torch.uint8, device=args.device)
        rows = DeviceLetterbox(letterbox_transform(hw, INPUT_HW), 'cpu').source_rows
        pinned_rows = pinned[:len(rows)]
        copy_rows = RowCopy(rows if len(rows) < hw[0] else None, pinned_rows)
        streams = [torch.cuda.Stream(args.device) for _ in range(2)]
        halves = (slice(0, hw[0] // 2), slice(hw[0] // 2, hw[0]))

        def upload() -> None:
            pinned.copy_(torch.from_numpy(frame))
            with torch.cuda.stream(streams[0]):
                device.copy_(pinned, non_blocking=True)
            streams[0].synchronize()

        def upload_halves() -> None:
            pinned.copy_(torch.from_numpy(frame))
            for half, stream in zip(halves, streams):
                with torch.cuda.stream(stream):
                    device[half].copy_(pinned[half], non_blocking=True)
            for stream in streams:
                stream.synchronize()

        def upload_rows() -> None:
            copy_rows(frame)
            with torch.cuda.stream(streams[0]):
                device[:len(rows)].copy_(pinned_rows, non_blocking=True)
            streams[0].synchronize()

        name = f'{hw[1]}x{hw[0]}'
        figures[name] = summary(timed(upload, args.frames, args.warmup))
        figures[name]['two_streams'] = summary(timed(upload_halves, args.frames, args.warmup))
        figures[name]['rows'] = summary(timed(upload_rows, args.frames, args.warmup))
        figures[name]['rows']['count'] = len(rows)
    return figures


def install_standin() -> None:
    """Put the GPU stand-in `tensorrt` module (TensorRT STANDIN_VERSION) into sys.modules."""
    sys.path.insert(0, str(ROOT / 'test'))
    from tensorrt_standin.trt import build_module

    sys.modules['tensorrt'] = build_module(STANDIN_VERSION)


def standin_plan(torchscript: pathlib.Path, into: pathlib.Path, io_dtype: str,
                 max_batch: Optional[int] = None) -> pathlib.Path:
    """A GPU stand-in TensorRT plan running `torchscript` with I/O in `io_dtype`: batch 1, or
    with `max_batch` a dynamic batch profile min 1, opt = max = max_batch. Installs the
    stand-in `tensorrt` module (`install_standin`)."""
    install_standin()
    from tensorrt_standin import gpu_plan_bytes

    batch = '' if max_batch is None else f'.b{max_batch}'
    path = into / f'{torchscript.stem}.{io_dtype}-io{batch}.standin.engine'
    profile = {} if max_batch is None else {'dynamic': True, 'batch': max_batch}
    path.write_bytes(gpu_plan_bytes(str(torchscript), STANDIN_VERSION, io_dtype, **profile))
    return path


def engine_figures(path: pathlib.Path, seed_forward: Any, args: argparse.Namespace,
                   ultralytics: Optional[Dict[str, Any]], uploads: Dict[str, Any]
                   ) -> Dict[str, Any]:
    """One engine file on the GPU: engine alone, detector, seed-style pipeline, ratios."""
    import torch

    detector = HumanDetector(path, device=args.device)
    host_resize = HumanDetector(path, device=args.device, resize_on='host')
    pipeline = detector.torch_pipeline
    assert pipeline is not None, f'{path} did not get the GPU-resident pipeline'
    figures: Dict[str, Any] = {
        'model': path.name, 'backend': detector.engine.backend,
        'input_dtype': str(detector.input_dtype),
        'graphs': {'forward': pipeline._batches[1].forward.graph is not None,
                   'nms': pipeline._batches[1].decode.graph is not None}}

    def eager() -> None:
        with torch.cuda.stream(pipeline._stream):  # not the default stream (TensorRT syncs it)
            detector.engine.infer_torch(pipeline.input)
        torch.cuda.synchronize()

    engine = {'eager': summary(timed(eager, args.frames, args.warmup))}
    forward_graph = pipeline._batches[1].forward.graph
    if forward_graph is not None:
        engine['graph'] = summary(timed(lambda: replay_and_wait(forward_graph),
                                        args.frames, args.warmup))
    figures['engine_alone'] = engine
    alone = engine.get('graph', engine['eager'])['median_ms']
    seed = SeedPipeline(seed_forward(detector), detector.input_hw)
    figures['sizes'] = {}
    for hw in SIZES:
        name = f'{hw[1]}x{hw[0]}'
        frame = people_frame(hw)
        size: Dict[str, Any] = {
            'detector': run_detector(detector, frame, args.frames, args.warmup),
            'detector_host_resize': run_detector(host_resize, frame, args.frames, args.warmup),
            'seed': summary(timed(lambda: seed(frame), args.frames, args.warmup))}
        size['seed']['detections'] = len(seed(frame)[1])
        ours = size['detector']['median_ms']
        floor = alone + uploads[name]['rows']['median_ms']
        size['floor_ms'] = floor
        size['floor_whole_frame_ms'] = alone + uploads[name]['median_ms']
        size['ratios'] = {
            'detector_over_engine_alone': ours / alone,
            'floor_over_engine_alone': floor / alone,
            'detector_over_floor': ours / floor,
            'detector_over_engine_eager': ours / engine['eager']['median_ms'],
            'seed_over_detector': size['seed']['median_ms'] / ours}
        if ultralytics is not None:
            size['ratios']['ultralytics_over_detector'] = ultralytics[name]['median_ms'] / ours
        figures['sizes'][name] = size
        print(json.dumps({path.name: {name: size['ratios']}}), flush=True)
    frame = people_frame((1080, 1920))
    detector(frame)
    figures['sync_operations_in_20_frames'] = sync_count(detector, frame)
    figures['cuda_api_calls_1080p'] = cuda_api_calls(detector, frame)
    figures['graphs_alone_1080p'] = {
        name: summary(timed(lambda: replay_and_wait(graph), args.frames, args.warmup))
        for name, graph in (('letterbox', pipeline._stages[((1080, 1920), 0)].letterbox.graph),
                            ('nms', pipeline._batches[1].decode.graph)) if graph is not None}
    figures['nms_fallbacks'] = pipeline.fallbacks
    if args.memory_frames:
        figures['memory'] = memory_check(detector, [frame, frame[:, ::-1].copy()],
                                         args.memory_frames)
    detector.close()
    host_resize.close()
    return figures


def export_torchscript(weights: pathlib.Path, into: pathlib.Path, device: str
                       ) -> List[pathlib.Path]:
    """The weights exported by Ultralytics to TorchScript, fp16 (half=True) and fp32."""
    import shutil

    from ultralytics import YOLO

    exported = []
    for half, name in ((True, 'fp16'), (False, 'fp32')):
        source = into / f'{name}.pt'
        shutil.copyfile(weights, source)
        written = YOLO(str(source)).export(format='torchscript', half=half, device=device,
                                           imgsz=640)
        exported.append(pathlib.Path(shutil.move(str(written), into / f'{name}.torchscript')))
    return exported


def gpu_figures(path: pathlib.Path, args: argparse.Namespace, scratch: pathlib.Path,
                uploads: Dict[str, Any]) -> Dict[str, Any]:
    """One TorchScript export: its engine, and the same module behind the TensorRT stand-in."""
    import torch

    module = torch.jit.load(str(path), map_location=args.device)
    half = next(iter(module.parameters())).dtype == torch.float16
    figures: Dict[str, Any] = {'model': path.name, 'half': half}
    ultralytics = None
    if args.weights is not None:
        from ultralytics import YOLO
        model = YOLO(str(args.weights))
        ultralytics = {}
        for hw in SIZES:
            frame = people_frame(hw)

            def predict() -> Any:
                return model.predict(frame, half=half, device=args.device, conf=0.5,
                                     iou=0.45, verbose=False)
            result = summary(timed(predict, args.frames, args.warmup))
            result['detections'] = len(predict()[0].boxes)
            ultralytics[f'{hw[1]}x{hw[0]}'] = result
        figures['ultralytics'] = ultralytics
        del model
    figures['torchscript'] = engine_figures(
        path, lambda detector: torch_forward(module, args.device, half), args, ultralytics,
        uploads)
    if args.tensorrt_standin:
        def engine_forward(detector: HumanDetector) -> Any:
            output = detector.engine.outputs[0].name
            return lambda blob: detector.engine.infer(blob)[output].astype(np.float32)

        # float32 I/O as Ultralytics' engines have (TensorRT converts at the edges of an fp16
        # engine), and for an fp16 model also float16 I/O, the TorchScript path's input.
        for io_dtype in ('float32', 'float16') if half else ('float32',):
            plan = standin_plan(path, scratch, io_dtype)
            figures[f'tensorrt_standin_{io_dtype}_io'] = engine_figures(
                plan, engine_forward, args, ultralytics, uploads)
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
    parser.add_argument('--export-weights', type=pathlib.Path,
                        help='export these Ultralytics .pt weights to TorchScript fp16 and '
                             'fp32 first (with Ultralytics, on --device) and run both; also '
                             'the default of --weights')
    parser.add_argument('--tensorrt-standin', action='store_true',
                        help='also run each TorchScript export behind the GPU stand-in for '
                             'TensorRT (test/tensorrt_standin/gpu.py), through the TensorRT '
                             'backend')
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
    with tempfile.TemporaryDirectory() as scratch:
        torchscripts = list(args.torchscript)
        if args.export_weights is not None:
            torchscripts += export_torchscript(args.export_weights, pathlib.Path(scratch),
                                               args.device)
            args.weights = args.weights or args.export_weights
        if torchscripts:
            import torch
            report['versions']['driver'] = driver_version()
            report['uploads'] = upload_figures(args)
            report['versions']['cuda_device'] = torch.cuda.get_device_name(args.device)
            report['gpu'] = []
            for path in torchscripts:
                report['gpu'].append(gpu_figures(path, args, pathlib.Path(scratch),
                                                 report['uploads']))
                # Written after each model: a run cut short keeps what it measured.
                args.out.write_text(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
