"""What tracking and 3D positions add to a frame: 1280x720, 10 people, on this CPU.

Per frame, as the node does it after inference: `PersonTracker.update` on 10 boxes walking a
few pixels a frame (with detector-like jitter), then `DepthImage` over a 16UC1 (or 32FC1)
message payload and `locate_people` for the 10 boxes, then the Detection3DArray message from the
Detection2DArray (built with or without them; an id string adds nothing measurable). Each
part is timed on its own and all together; wall time per frame, median and p90 over `--frames`
frames after `--warmup` frames.

    python bench/bench_tracking_depth.py --out bench/results/tracking_depth_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from importlib import metadata
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from human_detector_ros.depth import DepthImage, Intrinsics, locate_people  # noqa: E402
from human_detector_ros.postprocess import Detections  # noqa: E402
from human_detector_ros.tracking import PersonTracker  # noqa: E402

HEIGHT, WIDTH = 720, 1280
PEOPLE = 10
INTRINSICS = Intrinsics(fx=640.0, fy=640.0, cx=640.0, cy=360.0)


def people_boxes(frame: int, rng: np.random.Generator) -> np.ndarray:
    """(10, 4) boxes, 90x260 px, in a row across the frame, walking 3 px a frame, +-2 px
    of jitter."""
    x = np.arange(PEOPLE) * 125.0 + 10.0 + 3.0 * (frame % 20)
    y = np.full(PEOPLE, 300.0)
    boxes = np.stack([x, y, x + 90.0, y + 260.0], axis=1)
    return boxes + rng.uniform(-2.0, 2.0, boxes.shape)


def depth_payload(encoding: str) -> bytes:
    """A depth image: a wall at 9 m, each person's column at 2-6.5 m, 10 % holes."""
    rng = np.random.default_rng(0)
    metres = np.full((HEIGHT, WIDTH), 9.0, np.float32)
    for index, box in enumerate(people_boxes(0, rng).astype(int)):
        metres[box[1]:box[3], box[0]:box[2] + 60] = 2.0 + 0.5 * index
    metres[rng.random(metres.shape) < 0.1] = np.nan
    if encoding == '16UC1':
        return np.where(np.isfinite(metres), metres * 1000.0, 0).astype('<u2').tobytes()
    return metres.astype('<f4').tobytes()


def timed(step: Callable[[int], None], frames: int, warmup: int) -> Dict[str, float]:
    """Wall time (median, p90) and this thread's CPU time (median) per call, ms. On a shared,
    loaded machine the CPU time is the cost of the work; wall time adds the waits for a core."""
    wall: List[float] = []
    cpu: List[float] = []
    for frame in range(warmup + frames):
        start, start_cpu = time.perf_counter(), time.thread_time()
        step(frame)
        if frame >= warmup:
            wall.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.thread_time() - start_cpu) * 1e3)
    wall.sort()
    return {'median_ms': round(statistics.median(wall), 3),
            'p90_ms': round(wall[int(0.9 * (len(wall) - 1))], 3),
            'cpu_median_ms': round(statistics.median(cpu), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--out', type=pathlib.Path)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    boxes = [people_boxes(frame, rng) for frame in range(args.frames + args.warmup)]
    scores = np.linspace(0.55, 0.9, PEOPLE)
    class_ids = np.zeros(PEOPLE, np.int64)
    payloads = {encoding: depth_payload(encoding) for encoding in ('16UC1', '32FC1')}
    step_bytes = {'16UC1': WIDTH * 2, '32FC1': WIDTH * 4}
    tracker = PersonTracker()

    def track(frame: int) -> None:
        tracker.update(boxes[frame], scores, frame / 30.0)

    def locate(encoding: str) -> Callable[[int], None]:
        def step(frame: int) -> None:
            depth = DepthImage(encoding, HEIGHT, WIDTH, step_bytes[encoding], False,
                               payloads[encoding])
            positions = locate_people(depth, boxes[frame], INTRINSICS)
            assert all(position is not None for position in positions)
        return step

    results: Dict[str, Dict[str, float]] = {
        'tracking (10 people)': timed(track, args.frames, args.warmup),
        '3D positions, 16UC1': timed(locate('16UC1'), args.frames, args.warmup),
        '3D positions, 32FC1': timed(locate('32FC1'), args.frames, args.warmup),
    }
    try:
        from std_msgs.msg import Header
        from human_detector_ros.ros.messages import detections_3d_msg, detections_to_msg
    except ImportError:  # no ROS: the core parts only
        message = None
    else:
        ids = [str(index + 1) for index in range(PEOPLE)]
        depth = DepthImage('16UC1', HEIGHT, WIDTH, step_bytes['16UC1'], False, payloads['16UC1'])
        positions = [locate_people(depth, frame_boxes, INTRINSICS) for frame_boxes in boxes]
        flat = [detections_to_msg(Detections(frame_boxes.astype(np.float32),
                                             scores.astype(np.float32), class_ids), Header(), ids)
                for frame_boxes in boxes]

        def message(frame: int) -> None:
            detections_3d_msg(flat[frame], positions[frame])
        results['Detection3DArray message'] = timed(message, args.frames, args.warmup)
    tracker = PersonTracker()

    def everything(frame: int) -> None:
        track(frame)
        locate('16UC1')(frame)
        if message is not None:
            message(frame)
    results['added per frame: tracking, 16UC1 positions, Detection3DArray'] = timed(
        everything, args.frames, args.warmup)

    report = {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M'),
        'machine': f'{platform.machine()}, {os.cpu_count()} cores, '
                   f'load average {os.getloadavg()[0]:.1f} at the start',
        'python': platform.python_version(),
        'versions': {name: metadata.version(name)
                     for name in ('numpy', 'scipy', 'cjm-byte-track')},
        'frames': args.frames, 'warmup': args.warmup, 'results': results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
