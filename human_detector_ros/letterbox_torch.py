"""Letterbox on torch tensors (CPU or CUDA), byte for byte what `letterbox.letterbox` gives.

The resize reproduces cv2.resize(uint8, INTER_LINEAR) as OpenCV computes it on x86 (the
arithmetic of `cv::resize`'s generic linear path in modules/imgproc/src/resize.cpp, checked
against cv2 over many sizes by test/test_torch_paths.py):

- per axis, the source position of destination pixel d is fx = float32((d + 0.5) * scale - 0.5)
  with scale = 1 / (dst / src) in float64; sx = floor(fx) and fx -= sx (float32);
- the weights are 11-bit fixed point (INTER_RESIZE_COEF_BITS): saturate_cast<short> (round half
  to even) of (1 - fx) * 2048 and fx * 2048, computed in float32;
- horizontally, a column left of the image (sx < 0) or at/after its last pixel takes that edge
  pixel with weight 2048; the horizontal pass sums p0 * a0 + p1 * a1 exactly into int32;
- vertically, the row indices are clamped into the image but the weights are kept, and the two
  int rows are combined as the SIMD path does: mulhi((S0 >> 4), b0) + mulhi((S1 >> 4), b1), then
  (+2) >> 2 with unsigned saturation (mulhi: the high 16 bits of the 16x16-bit product). On
  exact 2x downscales OpenCV takes its INTER_AREA code, whose (a + b + c + d + 2) >> 2 this
  formula equals there.

`DeviceLetterbox` computes these index and weight tables once per source size and keeps them on
the device, so each frame is a fixed sequence of static-shape kernels (CUDA-graph capturable):
on CUDA where Triton imports, one kernel (`letterbox_triton`), else about ten torch operations.
It also finds the source rows the resize reads at all (`contributing_rows`): a downscale by an
integer factor reads only some (1920x1080 -> 640x360: every third row), so a caller can upload
just those rows (`source_rows`) and the letterbox indexes them directly.
"""
from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Dict, List, Optional, Tuple, TYPE_CHECKING

import numpy as np

from human_detector_ros.letterbox import LetterboxTransform, PAD_VALUE

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)
RESIZE_COEF_BITS = 11
_RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS
# Holds the error once the Triton letterbox has failed in this process.
_TRITON_FAILED: List[Exception] = []


@functools.lru_cache(maxsize=1)
def triton_letterbox() -> Optional[ModuleType]:
    """The Triton letterbox module, or None when Triton does not import."""
    try:
        from human_detector_ros import letterbox_triton
    except ImportError:
        return None
    return letterbox_triton


def _source_positions(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """(dst,) int64 sx = floor(fx) and (dst,) float32 fx - sx, as OpenCV computes them."""
    scale = 1.0 / (dst / src)
    position = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(position)
    return start.astype(np.int64), (position - start).astype(np.float32)


def _fixed_point(fraction: np.ndarray) -> np.ndarray:
    """(n,) float32 fractions -> (2, n) int32 weights round((1 - f) * 2048), round(f * 2048)."""
    weights = np.stack((np.float32(1) - fraction, fraction)) * np.float32(_RESIZE_COEF_SCALE)
    return np.rint(weights).astype(np.int32)


def linear_resize_tables(src: int, dst: int, clamp_weights: bool
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """One axis of INTER_LINEAR: (2, dst) int64 source indices, (2, dst) int32 weights.

    Pixel d is index[0, d] * weight[0, d] + index[1, d] * weight[1, d]. clamp_weights: the
    horizontal rule (outside the image: the edge pixel with the full weight); otherwise only
    the indices are clamped (OpenCV's vertical rule).
    """
    start, fraction = _source_positions(src, dst)
    if clamp_weights:
        outside = (start < 0) | (start >= src - 1)
        fraction = np.where(outside, np.float32(0), fraction)
        start = np.clip(start, 0, src - 1)
    index = np.clip(np.stack((start, start + 1)), 0, src - 1)
    return index, _fixed_point(fraction)


def contributing_rows(rows: np.ndarray, row_weights: np.ndarray, col_weights: np.ndarray
                      ) -> np.ndarray:
    """The source rows a vertical pass reads with effect, ascending (int64).

    rows, row_weights: the vertical tables of `linear_resize_tables`; col_weights: the
    horizontal weights. A row's term ((horizontal >> 4) * weight) >> 16 is 0 for every pixel
    value when weight * peak < 2**16, peak being the largest possible horizontal >> 4 (all
    pixels 255): weight 0, and also 1 or 2 since peak < 2**15. Rows read only with such weights
    do not change the result and are left out.
    """
    peak = (255 * int(col_weights.sum(axis=0).max())) >> 4
    return np.unique(rows[row_weights.astype(np.int64) * peak >= 1 << 16])


class DeviceLetterbox:
    """The letterbox of one source size on one torch device, tables made once.

    Call it with a uint8 BGR tensor (copied to the device if needed) and `out`, the
    [1, 3, H, W] float32/float16 network input; it writes RGB values / 255 into `out` and
    returns it. The tensor is either the whole HxWx3 frame or just its rows `source_rows`
    (frame[source_rows], (len(source_rows), W, 3)), all the letterbox reads; ValueError when
    the shapes do not match `transform`.

    source_rows: (n,) int64 numpy, ascending: the source rows the resize reads with effect
    (`contributing_rows`); all H rows when there is no resize.

    use_triton: letterbox with the Triton kernel (`letterbox_triton`; ModuleNotFoundError
    where Triton does not import; on the CPU only in Triton's interpreter), or with torch
    operations (False); None: Triton on CUDA where it imports. The kernel writes a contiguous
    `out` only (the torch operations any other). Should the kernel fail, this and every later
    letterbox of the process log it once and take the torch operations.
    """

    def __init__(self, transform: LetterboxTransform, device: torch.device,
                 use_triton: Optional[bool] = None) -> None:
        import torch

        self.transform = transform
        self.device = torch.device(device)
        src_h, src_w = transform.src_hw
        dst_h, dst_w = transform.resized_hw
        self.resized = transform.resized_hw != transform.src_hw
        self.source_rows = np.arange(src_h, dtype=np.int64)
        if self.resized:
            cols, col_weights = linear_resize_tables(src_w, dst_w, clamp_weights=True)
            rows, row_weights = linear_resize_tables(src_h, dst_h, clamp_weights=False)
            self.source_rows = contributing_rows(rows, row_weights, col_weights)
            # Rows as positions in source_rows; a row left out has no effect (see
            # contributing_rows), so any valid position will do for it.
            positions = np.minimum(np.searchsorted(self.source_rows, rows),
                                   len(self.source_rows) - 1)
            self._tables = (positions, cols, col_weights, row_weights)
        self._source_rows = torch.from_numpy(self.source_rows).to(self.device)
        wanted = use_triton or (use_triton is None and self.device.type == 'cuda')
        self._kernel = triton_letterbox() if wanted else None
        if use_triton and self._kernel is None:
            raise ModuleNotFoundError('use_triton=True needs Triton, which does not import')
        if self._kernel is not None and self.resized:
            # The Triton kernel's tables, (2, n) int32; its rows by the number of rows given:
            # positions in source_rows, or rows of the whole frame.
            def table(array: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(array, np.int32)).to(self.device)

            self._kernel_rows: Dict[int, torch.Tensor] = {
                src_h: table(rows), len(self.source_rows): table(positions)}
            self._kernel_tables = (table(row_weights), table(cols), table(col_weights))

    @functools.cached_property
    def _resize_tables(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The torch resize's device tables (pixel indices, column and row weights), made on
        its first use: where the Triton kernel letterboxes, never (they take ~4 MB a size)."""
        import torch

        positions, cols, col_weights, row_weights = self._tables
        # Pixel index (row * w + col) of both source rows x both source columns of every
        # output pixel: one gather per frame.
        pixels = positions.reshape(-1)[:, None] * self.transform.src_hw[1] \
            + cols.reshape(-1)[None, :]
        return (torch.from_numpy(pixels.reshape(-1).astype(np.int32)).to(self.device),
                torch.from_numpy(col_weights[None, :, :, None]).to(self.device),
                torch.from_numpy(row_weights[:, :, None, None]).to(self.device))

    def resize(self, bgr: torch.Tensor) -> torch.Tensor:
        """(len(source_rows), W, 3) uint8 tensor on the device, the frame's rows source_rows
        -> (h, w, 3) int32, the frame's cv2 INTER_LINEAR resize."""
        import torch

        dst_h, dst_w = self.transform.resized_hw
        pixel_index, col_weights, row_weights = self._resize_tables
        pixels = bgr.reshape(-1, 3).index_select(0, pixel_index)
        horizontal = (pixels.view(2 * dst_h, 2, dst_w, 3) * col_weights).sum(
            1, dtype=torch.int32)
        terms = ((horizontal.view(2, dst_h, dst_w, 3) >> 4) * row_weights) >> 16
        # No saturation needed: with weights summing to at most 2049 per axis the sum of the
        # terms is at most 1020, so the result stays within 0..255.
        return (terms.sum(0, dtype=torch.int32) + 2).bitwise_right_shift_(2)

    def __call__(self, bgr: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        import torch

        transform = self.transform
        dst_h, dst_w = transform.dst_hw
        rows_shape = (len(self.source_rows), transform.src_hw[1], 3)
        if tuple(bgr.shape) not in (transform.src_hw + (3,), rows_shape):
            raise ValueError(f'image of shape {tuple(bgr.shape)} does not match the letterbox '
                             f'source {transform.src_hw} x 3 or its rows {rows_shape}')
        if tuple(out.shape) != (1, 3, dst_h, dst_w):
            raise ValueError(f'out must be [1, 3, {dst_h}, {dst_w}], got {list(out.shape)}')
        top, left = transform.pad_top, transform.pad_left
        resized_h, resized_w = transform.resized_hw
        bgr = bgr.to(self.device, non_blocking=True)
        if self._kernel is not None and not _TRITON_FAILED and out.is_contiguous():
            try:
                return self._launch_kernel(bgr.contiguous(), out)
            except Exception as error:  # Triton imports but cannot compile or launch here
                LOG.warning('The Triton letterbox failed, the torch letterbox runs instead '
                            'from now on: %s', error)
                _TRITON_FAILED.append(error)
        if tuple(bgr.shape) != rows_shape:
            bgr = bgr.index_select(0, self._source_rows)
        interior = out[0, :, top:top + resized_h, left:left + resized_w]
        out.fill_(PAD_VALUE)
        image = self.resize(bgr) if self.resized else bgr
        interior.copy_(image.permute(2, 0, 1).flip(0))
        # A 0-dim tensor, not the number 255: CUDA multiplies by the reciprocal of a Python
        # scalar divisor, which is 1 ulp off true division (what numpy and Ultralytics do).
        return out.div_(torch.full((), 255, dtype=out.dtype, device=out.device))

    def _launch_kernel(self, bgr: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        transform = self.transform
        if self.resized:
            rows = self._kernel_rows[bgr.shape[0]]
            row_weights, cols, col_weights = self._kernel_tables
        else:
            rows = row_weights = cols = col_weights = bgr  # not read
        return self._kernel.letterbox(bgr, rows, row_weights, cols, col_weights, out,
                                      transform.pad_top, transform.pad_left,
                                      transform.resized_hw, PAD_VALUE, self.resized)


def letterbox_to_input(bgr: torch.Tensor, transform: LetterboxTransform,
                       out: torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 BGR tensor -> `out`, the [1, 3, H, W] RGB network input, values / 255.

    A one-off `DeviceLetterbox` on `out`'s device; returns `out`.
    """
    return DeviceLetterbox(transform, out.device)(bgr, out)
