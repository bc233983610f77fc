"""Many cameras, one GPU: one batched detector beside N detector processes and N calls in turn.

For 1, 2, 4 and 8 cameras of 1920x1080 frames (each camera its own frame: the sample images
and random noise, resized to 1080p), four ways to serve them:

- batched: one process, one HumanDetector with max_batch N; each step is one
  `detect_batch` of the N frames (one engine call);
- pipelined: as batched, through `detect_batches`: the next step's batch is on the device
  while the host collects the previous one (two batches in flight);
- processes: N processes, each a single-camera HumanDetector, running concurrently on the
  same device (what N nodes do today);
- sequential: one process, one single-camera HumanDetector; each step is N `detect()` calls.

Each mode runs in fresh processes that load, warm up and then wait, so the device memory of
every process is read (nvidia-smi, per process id) while all are loaded; then all start at
once and run untimed for `--warmup-seconds`, so that the timed steps begin on a device already
under their common load (a few dozen warm-up steps of a batch last only a tenth of a second),
and each records the GPU's SM clock after its timed steps. Figures: frames per second over all
cameras, the per-frame latency p50/p90 (a frame's latency runs from the start of its step,
when all N frames are at hand, to its detections: the batch time in batched mode, from the
batch's hand-over to its result in pipelined mode, the time to its turn's end in sequential
mode, its own call in processes mode), and the device memory of each process and all together
(on the CPU: their resident memory).

GPU machine, the default weights exported by Ultralytics to TorchScript fp16, through the
TorchScript backend and behind the GPU stand-in for TensorRT with a dynamic batch profile:
    python bench/bench_cameras.py --export-weights ~/.cache/human_detector_ros/models/best.pt \\
        --tensorrt-standin --out bench/results/results_cameras_gpu.json
(or `--torchscript fp16.torchscript` for an export at hand). A smoke check on the CPU:
    python bench/bench_cameras.py --device cpu --onnx --cameras 1 2 --frames 3 --warmup 1 \\
        --out /tmp/cameras_cpu.json
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import multiprocessing
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_detect import (  # noqa: E402
    driver_version, export_torchscript, install_standin, rss_mib, standin_plan, versions)
from human_detector_ros import assets  # noqa: E402

FRAME_HW = (1080, 1920)
MODES = ('batched', 'pipelined', 'processes', 'sequential')


def camera_frame(camera: int) -> np.ndarray:
    """Camera `camera`'s 1080p BGR frame: a sample image (every other camera) or random
    content with a sample image pasted in, so each camera sees its own picture."""
    names = ('camera.png', 'astronaut.png')
    sample = cv2.imread(str(assets.sample_image_path(names[camera % 2])), cv2.IMREAD_COLOR)
    height, width = FRAME_HW
    if camera % 4 < 2:
        return cv2.resize(sample, (width, height), interpolation=cv2.INTER_LINEAR)
    frame = np.random.default_rng(camera).integers(0, 256, (height, width, 3), np.uint8)
    person = cv2.resize(sample, (height // 2, height // 2))
    left = (camera * 331) % (width - person.shape[1])
    frame[height // 4:height // 4 + person.shape[0], left:left + person.shape[1]] = person
    return frame


def worker(spec: Dict[str, Any], connection: Any) -> None:
    """One process of a mode: load, warm up, report 'ready' with its memory, wait for 'go',
    run `spec['frames']` steps, report the latencies."""
    if spec['standin']:
        install_standin()
    from human_detector_ros.detector import HumanDetector

    detector = HumanDetector(spec['model'], backend=spec['backend'], device=spec['device'],
                             max_batch=spec['max_batch'])
    frames = [camera_frame(camera) for camera in spec['cameras']]
    cuda = detector.engine.device.startswith('cuda')
    if spec['mode'] == 'batched':
        def step() -> List[float]:
            start = time.perf_counter()
            detector.detect_batch(frames)
            return [(time.perf_counter() - start) * 1e3] * len(frames)
    elif spec['mode'] == 'pipelined':
        handed_over: collections.deque = collections.deque()

        def every_step() -> Iterator[List[np.ndarray]]:
            while True:
                handed_over.append(time.perf_counter())
                yield frames

        results = detector.detect_batches(every_step())

        def step() -> List[float]:
            next(results)
            return [(time.perf_counter() - handed_over.popleft()) * 1e3] * len(frames)
    else:
        def step() -> List[float]:
            start = time.perf_counter()
            ends = []
            for frame in frames:
                detector(frame)
                ends.append((time.perf_counter() - start) * 1e3)
            return ends
    for _ in range(spec['warmup']):
        step()
    memory = {'rss_mib': rss_mib()}
    if cuda:
        import torch
        memory['torch_reserved_mib'] = torch.cuda.memory_reserved() / 2**20
        memory['torch_max_allocated_mib'] = torch.cuda.max_memory_allocated() / 2**20
    connection.send({'pid': os.getpid(), 'memory': memory,
                     'engine_max_batch': detector.engine.max_batch,
                     'pipeline': 'torch' if detector.torch_pipeline is not None else 'numpy'})
    connection.recv()
    warm_until = time.perf_counter() + spec['warmup_seconds']
    while time.perf_counter() < warm_until:
        step()
    started = time.perf_counter()
    latencies: List[float] = []
    for _ in range(spec['frames']):
        latencies += step()
    ended = time.perf_counter()
    pipeline = detector.torch_pipeline
    connection.send({'latencies_ms': latencies, 'start': started, 'end': ended,
                     'sm_clock_mhz': sm_clock_mhz(detector.engine.device) if cuda else None,
                     'nms_fallbacks': pipeline.fallbacks if pipeline is not None else None})
    detector.close()


def sm_clock_mhz(device: str) -> Optional[int]:
    """The GPU's current SM clock in MHz (NVML through torch), or None where NVML is absent."""
    import torch

    try:
        return int(torch.cuda.clock_rate(device))
    except Exception:  # no NVML library or no pynvml module: the figure is optional
        return None


def device_memory_by_pid() -> Dict[int, float]:
    """Used device memory of each compute process, MiB (nvidia-smi), or {} without it."""
    try:
        listing = subprocess.run(
            ['nvidia-smi', '--query-compute-apps=pid,used_memory',
             '--format=csv,noheader,nounits'], check=True, stdout=subprocess.PIPE,
            universal_newlines=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    used = {}
    for line in listing.strip().splitlines():
        pid, _, mib = line.partition(',')
        if mib.strip().isdigit():
            used[int(pid)] = float(mib)
    return used


def run_mode(mode: str, cameras: int, model: pathlib.Path, backend: str,
             args: argparse.Namespace) -> Dict[str, Any]:
    """One mode with `cameras` cameras, in fresh processes; its figures."""
    context = multiprocessing.get_context('spawn')
    base = {'mode': mode, 'model': str(model), 'backend': backend, 'device': args.device,
            'frames': args.frames, 'warmup': args.warmup, 'warmup_seconds': args.warmup_seconds,
            'standin': backend == 'tensorrt' and args.tensorrt_standin}
    if mode == 'processes':
        specs = [dict(base, cameras=[camera], max_batch=1) for camera in range(cameras)]
    else:
        specs = [dict(base, cameras=list(range(cameras)),
                      max_batch=1 if mode == 'sequential' else cameras)]
    pipes, processes = [], []
    for spec in specs:
        ours, theirs = context.Pipe()
        process = context.Process(target=worker, args=(spec, theirs), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        ready = [pipe.recv() for pipe in pipes]
        on_device = device_memory_by_pid()
        for pipe in pipes:
            pipe.send('go')
        done = [pipe.recv() for pipe in pipes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    latencies = [value for result in done for value in result['latencies_ms']]
    wall = max(result['end'] for result in done) - min(result['start'] for result in done)
    for entry in ready:
        entry['memory']['device_mib'] = on_device.get(entry['pid'])
    device_total = [entry['memory']['device_mib'] for entry in ready]
    return {
        'mode': mode, 'cameras': cameras, 'processes': len(specs),
        'engine_max_batch': [entry['engine_max_batch'] for entry in ready],
        'pipeline': ready[0]['pipeline'],
        'fps': len(latencies) / wall,
        'latency_p50_ms': float(np.percentile(latencies, 50)),
        'latency_p90_ms': float(np.percentile(latencies, 90)),
        'frames': len(latencies),
        'memory_per_process': [entry['memory'] for entry in ready],
        'sm_clock_mhz_after_run': [result['sm_clock_mhz'] for result in done],
        # Frames, warm-up included, whose candidates overflowed the fixed-size NMS (then the
        # exact NMS runs after one more synchronisation).
        'nms_fallbacks': [result['nms_fallbacks'] for result in done],
        'device_mib_total': (sum(device_total) if all(value is not None
                                                      for value in device_total) else None),
        'rss_mib_total': sum(entry['memory']['rss_mib'] for entry in ready),
    }


def model_figures(model: pathlib.Path, backend: str, args: argparse.Namespace
                  ) -> Dict[str, Any]:
    figures: Dict[str, Any] = {'model': str(model), 'backend': backend, 'runs': []}
    for cameras in args.cameras:
        for mode in MODES:
            result = run_mode(mode, cameras, model, backend, args)
            print(f'{model.name} {backend} {cameras} camera(s) {mode}: {result["fps"]:.1f} fps, '
                  f'p50 {result["latency_p50_ms"]:.2f} ms, p90 {result["latency_p90_ms"]:.2f} '
                  f'ms, device {result["device_mib_total"]} MiB', flush=True)
            figures['runs'].append(result)
    by = {(run['cameras'], run['mode']): run for run in figures['runs']}
    figures['ratios'] = {}
    # One camera's figures: its frame alone through `detect_batch`.
    single = by.get((1, 'batched'))
    for cameras in args.cameras:
        separate = by[(cameras, 'processes')]
        ratios = {}
        for mode in ('batched', 'pipelined'):
            run = by[(cameras, mode)]
            ratios[f'{mode}_fps_over_processes'] = run['fps'] / separate['fps']
            if single is not None:
                ratios[f'{mode}_p90_over_one_camera'] = (run['latency_p90_ms']
                                                         / single['latency_p90_ms'])
                if run['device_mib_total'] and single['device_mib_total']:
                    ratios[f'{mode}_memory_over_one_camera'] = (run['device_mib_total']
                                                                / single['device_mib_total'])
        figures['ratios'][str(cameras)] = ratios
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--torchscript', type=pathlib.Path, nargs='*', default=[],
                        help='TorchScript exports to run (TorchScript backend)')
    parser.add_argument('--export-weights', type=pathlib.Path,
                        help='export these Ultralytics .pt weights to TorchScript fp16 first '
                             '(with Ultralytics, on --device)')
    parser.add_argument('--tensorrt-standin', action='store_true',
                        help='also run each TorchScript export behind the GPU stand-in for '
                             'TensorRT with a dynamic batch profile up to the most cameras')
    parser.add_argument('--onnx', nargs='?', const='', default=None,
                        help='run this ONNX model (default: the default one) through ONNX '
                             'Runtime, e.g. for a CPU smoke check')
    parser.add_argument('--cameras', type=int, nargs='+', default=[1, 2, 4, 8])
    parser.add_argument('--device', default='cuda:0')
    parser.add_argument('--frames', type=int, default=100,
                        help='timed steps per process (a step serves every camera once)')
    parser.add_argument('--warmup', type=int, default=20,
                        help='steps before the memory is read (graph capture, allocations)')
    parser.add_argument('--warmup-seconds', type=float, default=1.0,
                        help='seconds every process runs after the common start, untimed')
    parser.add_argument('--out', type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    report: Dict[str, Any] = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              'versions': versions(), 'machine': platform.machine(),
                              'frame_hw': list(FRAME_HW),
                              'args': {key: str(value) for key, value in vars(args).items()},
                              'models': []}
    if args.device.startswith('cuda'):
        import torch
        report['versions']['driver'] = driver_version()
        report['versions']['cuda_device'] = torch.cuda.get_device_name(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        runs = []
        if args.onnx is not None:
            runs.append((pathlib.Path(args.onnx) if args.onnx else assets.default_model_path(),
                         'onnxruntime'))
        torchscripts = list(args.torchscript)
        if args.export_weights is not None:
            torchscripts += export_torchscript(args.export_weights, pathlib.Path(scratch),
                                               args.device)[:1]
        for path in torchscripts:
            runs.append((path, 'torchscript'))
            if args.tensorrt_standin:
                runs.append((standin_plan(path, pathlib.Path(scratch), 'float16',
                                          max(args.cameras)),
                             'tensorrt'))
        for model, backend in runs:
            report['models'].append(model_figures(model, backend, args))
            # Written after each model: a run cut short keeps what it measured.
            args.out.write_text(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
