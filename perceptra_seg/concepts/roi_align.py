"""RoI Align with torchvision's semantics, in plain torch (we ship no torchvision).

SAM 3's exemplar encoder pools a 7×7 grid of image features inside each exemplar box with
``torchvision.ops.roi_align(features, boxes, 7)`` (``spatial_scale`` 1, adaptive ``sampling_ratio``, ``aligned``
False). :func:`roi_align` computes the same samples: each output bin averages a ``gh × gw`` grid of points
(``gh = ceil(box_h / 7)``, ``gw = ceil(box_w / 7)``), each point interpolated bilinearly with torchvision's border
rules (a point more than one pixel outside the map counts as 0; coordinates below 0 are clamped to 0; the last row /
column is used for points beyond it). Bilinear interpolation is separable, so each box becomes two small
interpolation matrices and two matrix products instead of a loop over points.
"""

from __future__ import annotations

import math

import torch

__all__ = ["roi_align"]


def _axis_weights(starts: list[float], size: int, dtype: torch.dtype) -> torch.Tensor:
    """``[len(starts), size]`` bilinear weights of 1-D sample coordinates ``starts`` on an axis of ``size`` cells."""
    weights = torch.zeros(len(starts), size, dtype=torch.float64)
    for row, coordinate in enumerate(starts):
        if coordinate < -1.0 or coordinate > size:
            continue  # outside the map: this sample contributes 0
        coordinate = max(coordinate, 0.0)
        low = int(coordinate)
        if low >= size - 1:
            weights[row, size - 1] = 1.0
            continue
        fraction = coordinate - low
        weights[row, low] = 1.0 - fraction
        weights[row, low + 1] = fraction
    return weights.to(dtype)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int) -> torch.Tensor:
    """Pool ``output_size × output_size`` features inside each box (torchvision ``roi_align``, ``aligned=False``).

    Args:
        features: float ``[B, C, H, W]`` feature maps.
        boxes: float ``[B, K, 4]`` boxes per map, XYXY in feature-map cells (``spatial_scale`` 1).
        output_size: side of the pooled grid (7 for SAM 3).

    Returns:
        ``[B * K, C, output_size, output_size]``, boxes of map 0 first (torchvision's order for a list of boxes).
    """
    batch, channels, height, width = features.shape
    pooled: list[torch.Tensor] = []
    for image in range(batch):
        for x1, y1, x2, y2 in boxes[image].tolist():
            box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
            bin_w, bin_h = box_w / output_size, box_h / output_size
            grid_w, grid_h = math.ceil(box_w / output_size), math.ceil(box_h / output_size)
            ys = [y1 + p * bin_h + (i + 0.5) * bin_h / grid_h for p in range(output_size) for i in range(grid_h)]
            xs = [x1 + p * bin_w + (i + 0.5) * bin_w / grid_w for p in range(output_size) for i in range(grid_w)]
            wy = _axis_weights(ys, height, features.dtype)  # [S * gh, H]
            wx = _axis_weights(xs, width, features.dtype)  # [S * gw, W]
            samples = wy @ features[image] @ wx.t()  # [C, S * gh, S * gw]
            samples = samples.view(channels, output_size, grid_h, output_size, grid_w)
            pooled.append(samples.sum(dim=(2, 4)) / max(grid_h * grid_w, 1))
    if not pooled:
        return features.new_zeros(0, channels, output_size, output_size)
    return torch.stack(pooled)
