"""Planar contours of one binary slice, and their rasterisation back to voxels, as an RTSTRUCT carries them.

The one contour geometry DicomFidelity writes (and the fidelity check predicts) is the marching-squares iso-line at
0.5 of the voxel mask on the reference image plane (skimage.measure.find_contours, face-connected foreground):

* every vertex lies half-way between a voxel centre inside and one outside, so no voxel centre is ever *on* a
  contour, and voxel-centre inclusion with the even-odd rule (what planning systems and common readers do) gives
  back exactly the voxels the contours came from;
* islands are separate outer contours and holes are separate inner contours; diagonally touching voxels become
  separate contours, so no contour touches or crosses another;
* collinear vertices are dropped (they change nothing), which keeps files small.

Holes can be encoded two ways (``HoleEncoding``, PS3.3 C.8.8.6.3): as separate inner contours (``separate``: read
right only by readers that XOR the contours of a plane; readers that take their union fill the holes) or joined to
their outer contour by a narrow channel (``keyhole``: one simple polygon per outer region, read right by both).
Our channels are 0.1 pixel wide and run along a quarter-pixel line (row or column + 0.25), so they hold no voxel
centre: centre-inclusion readers lose no voxel to them; only the contour area shrinks by width x length.

What such a contour does *not* keep: the enclosed area of a one-voxel-thin part is about half its voxels (a single
voxel becomes a diamond of half its area), so volumes computed from contour areas, and readers that round vertices
or weigh area coverage, see thin parts differently. The fidelity check reports both.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KEYHOLE_WIDTH_PIXELS = 0.1  # channel width; any width below 0.5 keeps the channel clear of voxel centres
MAX_CHANNEL_LINES = 48  # quarter-pixel lines tried per axis and hole


class HoleEncoding(enum.Enum):
    """How a hole in a plane of a structure is written (PS3.3 C.8.8.6.3)."""

    SEPARATE = "separate"  # inner contour of its own: for readers that XOR the contours of a plane
    KEYHOLE = "keyhole"  # joined to its outer contour by a narrow channel: for XOR and union readers alike


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a 2-D mask, each an (N, 2) array of (column, row) pixel coordinates,
    not repeated at the end."""
    from skimage.measure import find_contours

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    padded = np.pad(mask, 1).astype(np.uint8)
    contours = []
    for contour in find_contours(padded, 0.5, fully_connected="low"):
        points = contour[:-1, ::-1] - 1.0  # (row, col) of the padded image -> (col, row) of the mask
        points = drop_collinear(points)
        if len(points) >= 3:
            contours.append(points)
    return contours


def drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices that lie on the straight line through their neighbours (exact for half-pixel vertices)."""
    if len(points) < 4:
        return points
    previous = np.roll(points, 1, axis=0)
    following = np.roll(points, -1, axis=0)
    a, b = points - previous, following - points
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return points[np.abs(cross) > 1e-9]


def rasterize_contours(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of closed (column, row) contours by voxel-centre inclusion; nested contours are holes.

    A vectorised scanline fill (linear in crossings and pixels, unlike point-in-polygon per pixel): on every pixel-
    centre row the crossings of all edges of all contours are sorted and filled pairwise, which *is* the even-odd
    rule. Half-open rules (an edge covers rows y0 <= r < y1; a span covers columns xa <= c < xb) keep it consistent
    for centres exactly on an edge or vertex. Tested against skimage.draw.polygon.
    """
    rows, cols = int(shape[0]), int(shape[1])
    result = np.zeros((rows, cols), dtype=bool)
    polygons = [np.asarray(c, dtype=float) for c in contours if len(c) >= 3]
    if not polygons or rows == 0 or cols == 0:
        return result
    start = np.concatenate(polygons)
    end = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    x0, y0, x1, y1 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
    sloped = y0 != y1
    x0, y0, x1, y1 = x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    first = np.clip(np.ceil(np.minimum(y0, y1)), 0, rows).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, rows).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    total = int(counts.sum())
    if total == 0:
        return result
    edge = np.repeat(np.arange(len(counts)), counts)
    row = first[edge] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    span_row, left, right = row[0::2], x[0::2], x[1::2]
    c0 = np.clip(np.ceil(left), 0, cols).astype(np.int64)
    c1 = np.clip(np.ceil(right), 0, cols).astype(np.int64)
    change = np.zeros((rows, cols + 1), dtype=np.int32)
    np.add.at(change, (span_row, c0), 1)
    np.add.at(change, (span_row, c1), -1)
    result[:] = np.cumsum(change[:, :cols], axis=1) > 0
    return result


def signed_area(contour: np.ndarray) -> float:
    """Shoelace area in pixels: positive around islands, negative around holes (marching-squares orientation)."""
    x, y = contour[:, 0], contour[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def rasterize_union(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """What a union reader sees: every contour filled on its own (voxel-centre inclusion), then OR-ed, so a hole
    written as an inner contour is filled."""
    rows, cols = int(shape[0]), int(shape[1])
    result = np.zeros((rows, cols), dtype=bool)
    for contour in contours:
        contour = np.asarray(contour, dtype=float)
        if len(contour) < 3:
            continue
        c0, r0 = (max(0, int(np.floor(v))) for v in contour.min(axis=0))
        c1, r1 = (int(np.ceil(v)) + 1 for v in contour.max(axis=0))
        c1, r1 = min(cols, c1), min(rows, r1)
        if c1 <= c0 or r1 <= r0:
            continue
        window = result[r0:r1, c0:c1]
        window |= rasterize_contours([contour - [c0, r0]], window.shape)
    return result


@dataclass
class KeyholedSlice:
    """The polygons of one plane with holes joined to their outer contours, and what that cost."""

    polygons: list[np.ndarray]
    bridges: int  # channels cut, one per hole joined
    unbridged: int  # holes left as separate inner contours (a channel could not be cut)
    area_pixels: float  # contour area the channels take (pixels)


def _crossings(edges: np.ndarray, axis: int, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Where edges (x0, y0, x1, y1, ring) cross the line coordinate[axis] == value: positions along the other axis,
    and the ring each crossing belongs to."""
    a0, a1 = edges[:, axis], edges[:, 2 + axis]
    b0, b1 = edges[:, 1 - axis], edges[:, 3 - axis]
    hit = (a0 < value) != (a1 < value)
    t = (value - a0[hit]) / (a1[hit] - a0[hit])
    return b0[hit] + t * (b1[hit] - b0[hit]), edges[hit, 4]


def _ring_edges(rings: Sequence[np.ndarray]) -> np.ndarray:
    parts = []
    for number, ring in enumerate(rings):
        start = np.asarray(ring, dtype=float)
        end = np.roll(start, -1, axis=0)
        parts.append(np.column_stack([start, end, np.full(len(start), number, dtype=float)]))
    return np.concatenate(parts)


def _channel(polygon, width: float, used: set):
    """The shortest axis-parallel channel on a quarter-pixel line from the first hole of ``polygon`` to the nearest
    other ring (the outer contour or another hole): a thin shapely box, or None when no line crosses the hole."""
    from shapely.geometry import box

    rings = [np.asarray(polygon.exterior.coords)[:-1]] + [np.asarray(r.coords)[:-1] for r in polygon.interiors]
    edges = _ring_edges(rings)
    hole = rings[1]
    best = None
    for axis in (1, 0):  # 1: a row line (y = const), the channel runs along x; 0: a column line
        low, high = float(hole[:, axis].min()), float(hole[:, axis].max())
        values = np.arange(np.floor(low) + 0.25, high, 0.5)
        values = values[values > low]
        if len(values) > MAX_CHANNEL_LINES:  # a large hole: evenly spread lines find a short channel as well
            values = values[np.unique(np.linspace(0, len(values) - 1, MAX_CHANNEL_LINES).round().astype(int))]
        for value in values:
            penalty = 1e6 if (axis, value) in used else 0.0  # a line already cut: only when nothing else crosses
            position, ring = _crossings(edges, axis, float(value))
            order = np.argsort(position)
            position, ring = position[order], ring[order]
            mine = np.flatnonzero(ring == 1)
            if len(mine) < 2:
                continue
            for side in (-1, 1):  # towards lower, then higher coordinates
                i = mine[0] if side < 0 else mine[-1]
                j = i + side  # the nearest crossing beyond the hole on this side
                if not 0 <= j < len(position):
                    continue
                length = abs(position[i] - position[j]) + penalty
                if best is None or length < best[0]:
                    inner = (position[i] + position[i - side]) / 2  # middle of the hole's chord
                    beyond = j + side
                    outer = ((position[j] + position[beyond]) / 2 if 0 <= beyond < len(position)
                             else position[j] + side * 0.5)
                    best = (length, axis, float(value), inner, outer)
    if best is None:
        return None
    _, axis, value, inner, outer = best
    used.add((axis, value))
    low, high = min(inner, outer), max(inner, outer)
    if axis == 1:
        return box(low, value - width / 2, high, value + width / 2)
    return box(value - width / 2, low, value + width / 2, high)


def keyhole_contours(contours: Sequence[np.ndarray], width: float = KEYHOLE_WIDTH_PIXELS) -> KeyholedSlice:
    """Join every hole of one plane's marching-squares contours to its enclosing outer contour (see module doc).

    Islands inside holes stay polygons of their own (keyholed in turn). Each channel, the shortest found on the
    quarter-pixel lines across the hole, joins one hole to the outer contour or to another hole (which then count
    as one), so a polygon with n holes gets n channels. Should a channel not cut cleanly (not seen in tests), the
    holes of that polygon not yet joined stay separate inner contours and are counted in ``unbridged``.
    """
    from shapely.geometry import Point, Polygon
    from shapely.geometry.polygon import orient

    contours = [np.asarray(c, dtype=float) for c in contours]
    areas = [signed_area(c) for c in contours]
    islands = [i for i, a in enumerate(areas) if a > 0]
    if len(islands) == len(contours):
        return KeyholedSlice(list(contours), 0, 0, 0.0)
    shells = {i: Polygon(contours[i]) for i in islands}
    holes: dict[int, list[int]] = {i: [] for i in islands}
    for h, area in enumerate(areas):
        if area >= 0:
            continue
        probe = Point(contours[h][0])
        parents = [i for i in islands if abs(areas[i]) > abs(area) and shells[i].contains(probe)]
        holes[min(parents, key=lambda i: abs(areas[i]))].append(h)
    polygons, bridges, unbridged, area_taken = [], 0, 0, 0.0
    for i in islands:
        if not holes[i]:
            polygons.append(contours[i])
            continue
        polygon = Polygon(contours[i], [contours[h] for h in holes[i]])
        used: set = set()
        while polygon.interiors:
            channel = _channel(polygon, width, used)
            cut = polygon.difference(channel) if channel is not None else None
            if (cut is None or cut.geom_type != "Polygon" or len(cut.interiors) != len(polygon.interiors) - 1
                    or not cut.is_valid or polygon.area - cut.area > channel.area + 1e-9):
                break
            area_taken += polygon.area - cut.area
            polygon = cut
            bridges += 1
        polygon = orient(polygon, sign=1.0)  # outer counter-clockwise (positive), any hole left clockwise
        polygons.append(np.asarray(polygon.exterior.coords)[:-1])
        polygons.extend(np.asarray(r.coords)[:-1] for r in polygon.interiors)
        unbridged += len(polygon.interiors)
    return KeyholedSlice(polygons, bridges, unbridged, area_taken)
