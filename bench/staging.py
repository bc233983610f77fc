"""Ways to get a pageable HxWx3 uint8 frame onto the GPU, timed side by side.

    python bench/staging.py --out staging.json

What the torch pipeline's upload step could do: copy from pageable memory directly, copy into
a pinned buffer (numpy's one-thread copy or torch's parallel one) then DMA it (whole, or in
row bands so copy and DMA overlap, optionally with the bands copied by several threads), or
letterbox on the host first (cv2) and upload only the network-size image.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import sys
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.bench_detect import people_frame, SIZES, summary, timed  # noqa: E402
from human_detector_ros.letterbox import letterbox, letterbox_transform  # noqa: E402


def variants(frame: np.ndarray, pool: concurrent.futures.ThreadPoolExecutor
             ) -> Dict[str, Callable[[], None]]:
    import torch

    device = torch.empty(frame.shape, dtype=torch.uint8, device='cuda')
    pinned = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
    host = pinned.numpy()
    edges = np.linspace(0, frame.shape[0], 5).round().astype(int)
    bands = list(zip(edges[:-1], edges[1:]))
    transform = letterbox_transform(frame.shape[:2], (640, 640))
    small = torch.empty((640, 640, 3), dtype=torch.uint8, pin_memory=True)
    small_device = torch.empty((640, 640, 3), dtype=torch.uint8, device='cuda')
    stream = torch.cuda.Stream()

    def pageable() -> None:
        device.copy_(torch.from_numpy(frame))
        torch.cuda.synchronize()

    def memcpy_only() -> None:
        np.copyto(host, frame)

    def pinned_whole() -> None:
        np.copyto(host, frame)
        device.copy_(pinned, non_blocking=True)
        torch.cuda.synchronize()

    def torch_copy_only() -> None:
        pinned.copy_(torch.from_numpy(frame))

    def torch_copy_pinned_whole() -> None:
        pinned.copy_(torch.from_numpy(frame))
        device.copy_(pinned, non_blocking=True)
        torch.cuda.synchronize()

    def pinned_bands() -> None:
        with torch.cuda.stream(stream):
            for top, bottom in bands:
                np.copyto(host[top:bottom], frame[top:bottom])
                device[top:bottom].copy_(pinned[top:bottom], non_blocking=True)
        stream.synchronize()

    def copy_band(band: List[int]) -> None:
        top, bottom = band
        np.copyto(host[top:bottom], frame[top:bottom])
        with torch.cuda.stream(stream):
            device[top:bottom].copy_(pinned[top:bottom], non_blocking=True)

    def pinned_bands_threads() -> None:
        list(pool.map(copy_band, bands))
        stream.synchronize()

    def host_letterbox() -> None:
        letterbox(frame, transform, out=small.numpy())
        small_device.copy_(small, non_blocking=True)
        torch.cuda.synchronize()

    return {'pageable_copy': pageable, 'memcpy_into_pinned_only': memcpy_only,
            'pinned_whole': pinned_whole, 'torch_copy_into_pinned_only': torch_copy_only,
            'torch_copy_into_pinned_whole': torch_copy_pinned_whole,
            'pinned_4_bands': pinned_bands,
            'pinned_4_bands_4_threads': pinned_bands_threads,
            'host_letterbox_then_upload': host_letterbox}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--out', type=pathlib.Path, required=True)
    args = parser.parse_args()
    results = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for hw in SIZES:
            frame = people_frame(hw)
            results[f'{hw[1]}x{hw[0]}'] = {
                name: summary(timed(call, args.frames, 20))
                for name, call in variants(frame, pool).items()}
    args.out.write_text(json.dumps(results, indent=1))
    for size, figures in results.items():
        print(size, {name: round(value['median_ms'], 3) for name, value in figures.items()})
    return 0


if __name__ == '__main__':
    sys.exit(main())
