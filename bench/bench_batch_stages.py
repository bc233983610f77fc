"""Where a batch's time goes on the GPU: the torch pipeline's stages for 1, 2, 4 and 8 cameras.

For each batch size, in one process: the wall time of `detect_batch` on that many 1920x1080
camera frames (the frames of `bench_cameras.py`) with its stage split (`last_timings`), the
interval between results of `detect_batches` (the next batch on the device while the host
collects one), then
each stage on its own: the host's copy of the rows the letterbox reads into pinned memory
(perf_counter), and on the device, from CUDA events on the pipeline's stream after its
synchronisation, the uploads, the letterboxes (one per frame), the engine's forward, the NMS
and the download of the kept rows; and the forward replayed back to back (the engine's floor).
Figures: median, p90 and mean in milliseconds over `--steps` after `--warmup`.

GPU machine, a TorchScript export at hand (or `--export-weights best.pt`):
    python bench/bench_batch_stages.py --torchscript fp16.torchscript \\
        --out bench/results/batch_stages_gpu.json
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_cameras import camera_frame  # noqa: E402
from bench.bench_detect import (  # noqa: E402
    driver_version, export_torchscript, summary, timed, versions)
from human_detector_ros.detector import HumanDetector  # noqa: E402

DEVICE_STAGES = ('upload', 'letterbox', 'forward', 'nms', 'download')


def device_stages(detector: HumanDetector, frames: List[np.ndarray], steps: int
                  ) -> Dict[str, Dict[str, float]]:
    """Each device stage of the batch of `frames` alone, from CUDA events."""
    import torch

    pipeline = detector.torch_pipeline
    transforms = [detector.checked_transform(frame) for frame in frames]
    stages = [pipeline._stage(transform, slot) for slot, transform in enumerate(transforms)]
    batch = pipeline._batch(len(frames))
    stream = pipeline._stream
    events = [torch.cuda.Event(enable_timing=True) for _ in range(len(DEVICE_STAGES) + 1)]
    times: Dict[str, List[float]] = {name: [] for name in DEVICE_STAGES}
    host_copy: List[float] = []
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(steps):
            started = time.perf_counter()
            for stage, frame in zip(stages, frames):
                stage.copy_rows(frame)
            host_copy.append((time.perf_counter() - started) * 1e3)
            events[0].record(stream)
            for stage in stages:
                stage.frame.copy_(stage.host, non_blocking=True)
            events[1].record(stream)
            for stage in stages:
                stage.letterbox()
            events[2].record(stream)
            batch.outputs = batch.forward()
            events[3].record(stream)
            decoded = batch.decode()
            events[4].record(stream)
            pipeline._download(pipeline._in_flight[0], decoded)
            events[5].record(stream)
            events[5].synchronize()
            for index, name in enumerate(DEVICE_STAGES):
                times[name].append(events[index].elapsed_time(events[index + 1]))
    figures = {name: summary(values) for name, values in times.items()}
    figures['host_row_copy'] = summary(host_copy)
    return figures


def back_to_back(function: Callable[[], Any], stream: Any, steps: int) -> float:
    """Mean ms of `function` enqueued `steps` times on `stream` without waiting between."""
    import torch

    with torch.inference_mode(), torch.cuda.stream(stream):
        started = time.perf_counter()
        for _ in range(steps):
            function()
        stream.synchronize()
    return (time.perf_counter() - started) * 1e3 / steps


def batch_figures(detector: HumanDetector, size: int, args: argparse.Namespace
                  ) -> Dict[str, Any]:
    frames = [camera_frame(camera) for camera in range(size)]
    splits = []

    def step() -> None:
        detector.detect_batch(frames)
        splits.append(detector.last_timings)

    wall = timed(step, args.steps, args.warmup)
    del splits[:args.warmup]
    pipeline = detector.torch_pipeline
    results = detector.detect_batches(itertools.repeat(frames))
    pipelined = timed(lambda: next(results), args.steps, args.warmup)
    results.close()
    return {
        'batch': size,
        'detect_batch': summary(wall),
        # One batch after another through `detect_batches` (two in flight): the time between
        # two results, so 1000 / median is batches per second.
        'detect_batches_interval': summary(pipelined),
        'split': {name: summary([getattr(split, name) for split in splits])
                  for name in ('preprocess_ms', 'infer_ms', 'postprocess_ms')},
        'stages_alone': device_stages(detector, frames, args.steps),
        'forward_back_to_back_ms': back_to_back(pipeline._batch(size).forward,
                                                pipeline._stream, args.steps),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--torchscript', type=pathlib.Path, help='a TorchScript export')
    source.add_argument('--export-weights', type=pathlib.Path,
                        help='export these Ultralytics .pt weights to TorchScript fp16 first')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 2, 4, 8])
    parser.add_argument('--device', default='cuda:0')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--out', type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        model = args.torchscript or export_torchscript(args.export_weights,
                                                       pathlib.Path(scratch), args.device)[0]
        detector = HumanDetector(model, backend='torchscript', device=args.device,
                                 max_batch=max(args.batches))
        if detector.torch_pipeline is None or not detector.torch_pipeline.cuda:
            parser.error('the stages are timed with CUDA events: needs the torch pipeline on '
                         'a CUDA device')
        report = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  'versions': dict(versions(), driver=driver_version(),
                                   cuda_device=torch.cuda.get_device_name(args.device)),
                  'model': str(model), 'frame_hw': [1080, 1920],
                  'intra_op_threads': torch.get_num_threads(), 'batches': []}
        for size in args.batches:
            figures = batch_figures(detector, size, args)
            report['batches'].append(figures)
            print(json.dumps(figures), flush=True)
        detector.close()
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
