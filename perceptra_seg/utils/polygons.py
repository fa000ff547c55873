"""Mask ↔ polygon conversion along pixel edges (exact at tolerance 0), with holes.

Polygon convention (pixel corners): pixel ``(x, y)`` (that is ``mask[y, x]``) is the unit square
``[x, x + 1] x [y, y + 1]``. Rings run along pixel edges, so their vertices are integer corner coordinates at
``tolerance == 0``, the shoelace area of a polygon equals its pixel count, and a pixel is inside a polygon exactly
when its centre ``(x + 0.5, y + 0.5)`` is. This is also the convention of COCO / pycocotools polygons.
Rings are lists ``[[x, y], ...]`` without a repeated closing vertex. With ``y`` pointing down, exterior rings have a
positive shoelace sum ``sum(x_i * y_{i+1} - x_{i+1} * y_i)`` (clockwise on screen) and holes a negative one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from perceptra_seg.exceptions import InvalidInputError

__all__ = ["PolygonRings", "as_mask", "mask_to_polygons", "polygons_to_coco", "polygons_to_mask"]

#: A polygon: exterior ring first, then its holes; a ring is ``[[x, y], ...]``.
PolygonRings = list[list[list[float]]]


def as_mask(mask: Any) -> np.ndarray:
    """Any 2-D array-like -> bool ``[H, W]`` (nonzero = foreground); refuses other ranks and empty shapes."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask must be a 2-D array [H, W]; got shape {list(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"mask has zero size: {list(arr.shape)}")
    return arr if arr.dtype == np.bool_ else arr != 0


# Pixel corners as offsets from the pixel's top-left, in clockwise-on-screen order: TL, TR, BR, BL.
_CORNERS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.int64)
# For a step d = (dx, dy) between 8-neighbours, indexed by (dx + 1) * 3 + (dy + 1), walking with the region on
# the right: the corner of the pixel where the boundary leaves it towards the next pixel (_EXIT), and the corner
# where it arrives coming from the previous pixel (_ENTRY). Index 4, d = (0, 0), is a lone pixel: a full turn.
_EXIT = np.array([0, 3, 3, 0, 3, 2, 1, 1, 2], dtype=np.int64)
_ENTRY = np.array([2, 2, 1, 3, 3, 1, 3, 0, 0], dtype=np.int64)
# Unit edge directions in clockwise-on-screen order (east, south, west, north), indexed like the tables above,
# and, per direction, the offset from an edge's start to the top-left of the pixel on its right.
_DIR = np.array([-1, 2, -1, 3, -1, 1, -1, 0, -1], dtype=np.int64)
_RIGHT_PIXEL = np.array([[0, 0], [-1, 0], [-1, -1], [0, -1]], dtype=np.int64)


def _segment_neighbours(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Previous / next index within each closed segment of a concatenation of segments of the given lengths."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    idx = np.arange(int(ends[-1]))
    prev, nxt = idx - 1, idx + 1
    prev[starts] = ends - 1
    nxt[ends - 1] = starts
    return prev, nxt


def _trace_rings(chains: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn OpenCV borders (pixel centres ``(x, y)``) into rings along pixel edges, all chains at once.

    OpenCV traces with the foreground on the left, so each chain is reversed to have it on the right; each visit of
    a pixel then contributes the corners passed while walking clockwise around it from the corner where the
    boundary enters to the corner where it leaves (a full turn when they coincide: a spur or a lone pixel).
    Returns the unit-step corners ``[M, 2]`` of all rings, the ring offsets ``[n + 1]`` and a mask ``[M]`` of the
    corners where the ring turns (the others are collinear).
    """
    lengths = np.fromiter((len(c) for c in chains), dtype=np.int64, count=len(chains))
    pts = np.concatenate([c.reshape(-1, 2)[::-1] for c in chains]).astype(np.int64)
    prev, nxt = _segment_neighbours(lengths)
    d_in, d_out = pts - pts[prev], pts[nxt] - pts
    enter = _ENTRY[(d_in[:, 0] + 1) * 3 + d_in[:, 1] + 1]
    steps = (_EXIT[(d_out[:, 0] + 1) * 3 + d_out[:, 1] + 1] - enter) % 4
    steps[steps == 0] = 4
    owner = np.repeat(np.arange(len(pts)), steps)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(steps) - steps, steps) + 1
    corners = pts[owner] + _CORNERS[(enter[owner] + rank) % 4]
    ring_lengths = np.add.reduceat(steps, np.cumsum(lengths) - lengths)
    prev, nxt = _segment_neighbours(ring_lengths)
    before, after = corners - corners[prev], corners[nxt] - corners
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return corners, np.concatenate(([0], np.cumsum(ring_lengths))), turns


def _split_loop(loop: np.ndarray, stride: int) -> list[np.ndarray]:
    """Cut a closed unit-step walk at its repeated corners into simple loops."""
    keys = (loop[:, 0] * stride + loop[:, 1]).tolist()
    if len(set(keys)) == len(keys):
        return [loop]
    loops: list[np.ndarray] = []
    path: list[int] = []
    where: dict[int, int] = {}
    for i, key in enumerate(keys):
        if key in where:
            cut = where[key]
            loops.append(loop[path[cut:]])
            for j in path[cut + 1 :]:
                del where[keys[j]]
            del path[cut + 1 :]
        else:
            where[key] = len(path)
            path.append(i)
    loops.append(loop[path])
    return loops


def _concat(rings: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate closed rings: points ``[M, 2]``, ring lengths, and previous / next point index within each ring."""
    lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    prev, nxt = _segment_neighbours(lengths)
    return np.concatenate(rings), lengths, prev, nxt


def _drop_collinear(rings: Sequence[np.ndarray]) -> list[np.ndarray]:
    pts, lengths, prev, nxt = _concat(rings)
    before, after = pts - pts[prev], pts[nxt] - pts
    keep = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    kept = np.add.reduceat(keep.astype(np.int64), np.cumsum(lengths) - lengths)
    return np.split(pts[keep], np.cumsum(kept)[:-1])


def _retrace(rings: list[np.ndarray], labels4: np.ndarray, stride: int) -> list[list[np.ndarray]] | None:
    """Rebuild a polygon whose rings share corners as valid polygons, one per 4-connected foreground component.

    The unit edges are re-linked turning right (towards the foreground) wherever two boundaries meet at a corner,
    so every loop follows a single 4-connected component; loops are then cut at repeated corners. Each component
    gets its one positive loop as exterior and its negative loops as holes (they may touch at corners, which is
    valid). Returns ``None`` if that structure is not found (never expected; the caller then uses shapely).
    """
    start, _, _, nxt = _concat(rings)
    end = start[nxt]
    step = end - start
    direction = _DIR[(step[:, 0] + 1) * 3 + step[:, 1] + 1]
    keys = (start[:, 0] * stride + start[:, 1]) * 4 + direction
    order = np.argsort(keys)
    sorted_keys = keys[order]
    end_key = (end[:, 0] * stride + end[:, 1]) * 4
    successor = np.full(len(keys), -1, dtype=np.int64)
    for turn in (1, 0, 3):  # right, straight, left: the first that exists wins
        wanted = end_key + (direction + turn) % 4
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
        found = (sorted_keys[pos] == wanted) & (successor < 0)
        successor[found] = order[pos[found]]
    if (successor < 0).any():
        return None
    seen = np.zeros(len(keys), dtype=bool)
    succ = successor.tolist()
    loops: list[np.ndarray] = []
    for first in range(len(keys)):
        if seen[first]:
            continue
        cycle = [first]
        cur = succ[first]
        while cur != first:
            cycle.append(cur)
            cur = succ[cur]
        seen[cycle] = True
        loops.extend(_split_loop(start[cycle], stride))
    pts, lengths, _, nxt = _concat(loops)
    firsts = np.cumsum(lengths) - lengths
    area2 = np.add.reduceat(pts[:, 0] * pts[nxt, 1] - pts[nxt, 0] * pts[:, 1], firsts)
    step = pts[nxt[firsts]] - pts[firsts]
    pixel = pts[firsts] + _RIGHT_PIXEL[_DIR[(step[:, 0] + 1) * 3 + step[:, 1] + 1]]
    labels = labels4[pixel[:, 1], pixel[:, 0]].tolist()
    exteriors: dict[int, np.ndarray] = {}
    holes: dict[int, list[np.ndarray]] = {}
    for loop, label, positive in zip(loops, labels, (area2 > 0).tolist(), strict=True):
        if not positive:
            holes.setdefault(label, []).append(loop)
        elif exteriors.setdefault(label, loop) is not loop:
            return None
    if not set(holes) <= set(exteriors):
        return None
    return [[exterior, *holes.get(label, [])] for label, exterior in exteriors.items()]


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _to_rings(poly: Polygon) -> PolygonRings:
    poly = orient(poly, sign=1.0)  # shapely's positive orientation is our positive shoelace sum
    return [[[float(x), float(y)] for x, y in ring.coords[:-1]] for ring in [poly.exterior, *poly.interiors]]


def _shapely_parts(geom: Any) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    return [p for g in getattr(geom, "geoms", []) for p in _shapely_parts(g)]


def mask_to_polygons(mask: Any, *, tolerance: float = 0.0, min_area: float = 0.0) -> list[PolygonRings]:
    """Polygons (with holes) of a mask ``[H, W]``, in the pixel-corner convention of the module docstring.

    Borders come from ``cv2.findContours(RETR_CCOMP)`` (foreground 8-connected, holes 4-connected) and are
    converted to rings along pixel edges, so at ``tolerance == 0`` :func:`polygons_to_mask` gives the mask back
    exactly. Polygons are valid in the OGC / shapely sense: where pixels of a region touch only diagonally, the
    region is split into its 4-connected parts, which then share a corner (same pixels either way).

    Args:
        mask: 2-D array, nonzero = foreground.
        tolerance: when > 0, each polygon is simplified with shapely ``simplify(tolerance, preserve_topology=True)``
            (vertices then become floats).
        min_area: holes with area below it are dropped (filled), then polygons whose area (exterior minus the kept
            holes, in pixels) is below it are dropped.

    Returns:
        ``[polygon, ...]``; each polygon ``[exterior, hole, ...]``; each ring ``[[x, y], ...]``.
    """
    m = as_mask(mask)
    contours, hierarchy = cv2.findContours(m.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None or len(contours) == 0:
        return []
    links = hierarchy.reshape(-1, 4)
    corners, offsets, turns = _trace_rings(contours)
    stride = m.shape[0] + 1
    labels4: np.ndarray | None = None
    out: list[PolygonRings] = []
    for idx in np.flatnonzero(links[:, 3] == -1).tolist():
        members = [idx]
        child = int(links[idx, 2])
        while child != -1:
            members.append(child)
            child = int(links[child, 0])
        unit = [corners[offsets[i] : offsets[i + 1]] for i in members]
        flat = np.concatenate(unit)
        keys = flat[:, 0] * stride + flat[:, 1]
        if np.unique(keys).size == keys.size:  # disjoint simple rings: valid as they are
            groups = [[ring[turns[offsets[i] : offsets[i + 1]]] for ring, i in zip(unit, members, strict=True)]]
        else:
            if labels4 is None:
                labels4 = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)[1]
            rebuilt = _retrace(unit, labels4, stride)
            if rebuilt is None:  # pragma: no cover - defensive; the structure above always holds
                valid = shapely.make_valid(Polygon(unit[0], unit[1:]))
                rebuilt = [[np.asarray(r, dtype=np.int64) for r in _to_rings(p)] for p in _shapely_parts(valid)]
            cleaned = iter(_drop_collinear([ring for group in rebuilt for ring in group]))
            groups = [[next(cleaned) for _ in group] for group in rebuilt]
        for group in groups:
            if tolerance > 0:
                simple = Polygon(group[0], group[1:]).simplify(tolerance, preserve_topology=True)
                candidates = [_to_rings(p) for p in _shapely_parts(simple)]
            else:
                candidates = [[ring.astype(np.float64).tolist() for ring in group]]
            for rings in candidates:
                if min_area > 0:
                    rings = [rings[0], *(h for h in rings[1:] if _ring_area(h) >= min_area)]
                    if _ring_area(rings[0]) - sum(_ring_area(h) for h in rings[1:]) < min_area:
                        continue
                out.append(rings)
    return out


def polygons_to_mask(polygons: Sequence[Sequence[Sequence[Sequence[float]]]], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (pixel-corner convention) to bool ``[height, width]``.

    A pixel is set when its centre lies inside some polygon's exterior and outside that polygon's holes (the
    union over polygons). Each polygon is drawn with ``cv2.fillPoly`` on a canvas at twice the resolution around its
    bounding box, where pixel centres fall on odd coordinates and integer corners on even ones, and then sampled at
    the centres; that makes the result exact for integer corners, independent of fillPoly's edge rules.
    """
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"mask size must be positive; got {height}x{width}")
    out = np.zeros((height, width), dtype=bool)
    frac_bits = 4
    for polygon in polygons:
        rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in polygon if len(r) > 0]
        if not rings or len(rings[0]) < 3:
            continue
        x0 = max(int(np.floor(rings[0][:, 0].min())), 0)
        y0 = max(int(np.floor(rings[0][:, 1].min())), 0)
        x1 = min(int(np.ceil(rings[0][:, 0].max())), width)
        y1 = min(int(np.ceil(rings[0][:, 1].max())), height)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas = np.zeros((2 * (y1 - y0), 2 * (x1 - x0)), dtype=np.uint8)
        scaled = [np.rint((r - (x0, y0)) * (2 << frac_bits)).astype(np.int32) for r in rings]
        cv2.fillPoly(canvas, [scaled[0]], 1, lineType=cv2.LINE_8, shift=frac_bits)
        holes = [h for h in scaled[1:] if len(h) >= 3]
        for hole in holes:
            cv2.fillPoly(canvas, [hole], 0, lineType=cv2.LINE_8, shift=frac_bits)
        out[y0:y1, x0:x1] |= canvas[1::2, 1::2].astype(bool)
    return out


def polygons_to_coco(polygons: Sequence[Sequence[Sequence[Sequence[float]]]]) -> list[list[float]]:
    """COCO polygon segmentation ``[[x1, y1, x2, y2, ...], ...]``: the **exterior** rings only.

    The COCO polygon format cannot express holes (pycocotools merges all rings of an annotation as a union), so
    holes are left out here; use RLE (:func:`mask_to_rle`) when holes matter.
    """
    return [[float(v) for pt in polygon[0] for v in pt] for polygon in polygons if polygon and len(polygon[0]) >= 3]
