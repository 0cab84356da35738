"""Reading LiDAR point files into (N, C) float32 arrays, right or not at all.

Raw binary files (KITTI ``.bin``, nuScenes ``.pcd.bin``, float16 stacks) carry no header: their layout
(value type, values per point) comes from the file name or the caller, and any file's size fits
several layouts. A misread (five values per point read as four, float64 read as float32) does not
fail by itself; it yields garbage points. So every raw read is checked for plausible values: finite
(rows whose x, y and z are all NaN, an organized cloud's missing returns, are kept for the voxelizer
to drop and count),
coordinates within :data:`MAX_COORDINATE_M`, an intensity column within 0..:data:`MAX_INTENSITY`, a
ring column of whole numbers within 0..:data:`MAX_RING`, points that are not all in one spot. An
implausible read raises an error naming the layouts that do read plausibly.

Self-describing files (``.npy``, PCD ``.pcd``, LAS/LAZ ``.las``/``.laz``) are read as they declare,
with no range checks (a cloud in a map frame may lie kilometres away; NaN points of organized PCD
clouds are left for the voxelizer to drop and count), but a value that float32 cannot keep (an
absolute timestamp, a UTM coordinate beyond float32's centimetres) is an error, not a rounding.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from optional_dependencies import require

_WIDTH_IN_NAME = re.compile(r"_N(\d+)(?=[._])")

MAX_COORDINATE_M = 1000.0      # beyond any LiDAR's range in its own frame
MAX_INTENSITY = 65535.0        # 16-bit sensors (Ouster); KITTI uses 0..1, nuScenes 0..255
MAX_RING = 255                 # beam index of up to 256-beam sensors
MAX_EXTRA_VALUE = 1e6          # any other column (time lag, elongation, ...)
MIN_EXTENT_M = 0.01            # a scan whose points all lie within 1 cm is a zero-filled or text file
MIN_CHANNELS, MAX_CHANNELS = 3, 16
FLOAT32_COORDINATE_TOLERANCE_M = 0.01
_CANDIDATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))
_CANDIDATE_WIDTHS = range(3, 9)
_PRINTABLE = frozenset(range(32, 127)) | {9, 10, 13}
_MAGIC = [(b"\x93NUMPY", "an .npy array", ".npy"), (b"VERSION", "a PCD file", ".pcd"),
          (b"# .PCD", "a PCD file", ".pcd"), (b"LASF", "a LAS/LAZ file", ".las"),
          (b"PK\x03\x04", "a zip or .npz archive", ".npz (and load it with numpy)")]


@dataclass(frozen=True)
class PointFile:
    """A point file as read: ``points`` (N, C) float32, ``columns`` their C names (x, y, z first),
    ``layout`` how the file was read, in words (e.g. 'raw float32 x 5', 'PCD binary')."""
    points: np.ndarray
    columns: tuple[str, ...]
    layout: str


def point_file_layout(path: str) -> tuple[np.dtype, int]:
    """The (dtype, values per point) that :func:`read_points` assumes for a raw file by its name.

    - ``*.pcd.bin``: nuScenes LIDAR_TOP, float32 x 5 (x, y, z, intensity, ring index).
    - a name holding ``float16`` and ``_N<k>``: a float16 stack of k values per point, e.g. the
      10-sweep ``sweeps10_float16_N5.bin`` (x, y, z, intensity, time lag).
    - any other ``*.bin``: KITTI velodyne, float32 x 4 (x, y, z, reflectance).
    """
    name = os.path.basename(path).lower()
    dtype = np.dtype(np.float16 if "float16" in name else np.float32)
    width_match = _WIDTH_IN_NAME.search(os.path.basename(path))
    if width_match:
        return dtype, int(width_match.group(1))
    if name.endswith(".pcd.bin"):
        return dtype, 5
    if name.endswith(".bin"):
        return dtype, 4
    raise ValueError(f"{path}: cannot tell the point layout from the name; pass dtype= and point_width=")


def raw_columns(path: str, width: int) -> tuple[str, ...]:
    """Column names of a raw file read with ``width`` values per point: x, y, z, intensity, then
    'ring' for a nuScenes ``*.pcd.bin`` of width 5, else 'value4', 'value5', ..."""
    if os.path.basename(path).lower().endswith(".pcd.bin") and width == 5:
        return ("x", "y", "z", "intensity", "ring")
    return ("x", "y", "z", "intensity", *(f"value{i}" for i in range(4, width)))[:width]


def read_points(path: str, point_width: int | None = None, dtype=None, check_values: bool = True) -> np.ndarray:
    """Read a LiDAR point file as an (N, C) float32 array; see :func:`read_point_file`."""
    return read_point_file(path, point_width, dtype, check_values).points


def read_point_file(path: str, point_width: int | None = None, dtype=None, check_values: bool = True) -> PointFile:
    """Read a LiDAR point file.

    Args:
        path: a raw ``.bin`` file (KITTI ``.bin``, nuScenes ``.pcd.bin``, float16 stacks; see
            :func:`point_file_layout` for the layout each name implies), a ``.npy`` array (N, C) with
            3 <= C <= 16, a PCD file ``.pcd`` (fields x, y, z first, then the other scalar fields in
            file order; padding and packed-colour fields skipped) or a LAS/LAZ file (x, y, z, intensity).
        point_width: values per point of a raw file, overriding the name-based guess.
        dtype: stored value type of a raw file, overriding the name-based guess.
        check_values: check a raw read for plausible values (module docstring). Turn off only for a
            raw file known to hold values outside a LiDAR's own frame (e.g. map coordinates).
    Returns:
        :class:`PointFile` with (N, C) float32 points.
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: a size that is not a whole number of points, values implausible
            for the layout (with the layouts that do fit), a directory, an empty file, a text or
            pickle file, a ``.npy`` array that is not (N, 3..16) of real numbers, a PCD/LAS file the
            reader rejects, values that float32 cannot hold.
    """
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a point file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"point file not found: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file (a device, pipe or socket), not a point file")
    lower = path.lower()
    if lower.endswith(".npy"):
        return _read_npy(path)
    if lower.endswith(".pcd"):
        return _read_pcd(path)
    if lower.endswith((".las", ".laz")):
        return _read_las(path)
    return _read_raw(path, point_width, dtype, check_values)


# ----------------------------------------------------------------------------------------- raw files

def _read_raw(path: str, point_width, dtype, check_values: bool) -> PointFile:
    forced = point_width is not None or dtype is not None
    guessed_dtype, guessed_width = (None, None)
    if point_width is None or dtype is None:
        guessed_dtype, guessed_width = point_file_layout(path)
    dtype = np.dtype(dtype) if dtype is not None else guessed_dtype
    if dtype not in _CANDIDATE_DTYPES:
        raise ValueError(f"{path}: dtype must be float16, float32 or float64, got {dtype.name}")
    if point_width is not None and (isinstance(point_width, bool) or not float(point_width).is_integer()):
        raise ValueError(f"{path}: point_width must be a whole number, got {point_width!r}")
    point_width = int(point_width) if point_width is not None else guessed_width
    if not MIN_CHANNELS <= point_width <= MAX_CHANNELS:
        raise ValueError(f"{path}: point_width must be {MIN_CHANNELS}..{MAX_CHANNELS} (x, y, z, ...), "
                         f"got {point_width}")
    raw = np.fromfile(path, dtype=np.uint8)
    layout = f"raw {dtype.name} x {point_width}" + (" (given)" if forced else " (from the name)")
    if raw.size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), no points")
    head = raw[:512].tobytes()
    for magic, kind, suffix in _MAGIC:
        if head.startswith(magic):
            raise ValueError(f"{path}: is {kind} (its header says so), not raw binary points; name it *{suffix}")
    if all(byte in _PRINTABLE for byte in head):
        raise ValueError(f"{path}: looks like a text file (starts {head[:40].decode('ascii')!r}), not raw binary "
                         f"points; convert it to .bin (float32) or .npy")
    point_bytes = point_width * dtype.itemsize
    if raw.size % point_bytes:
        fits = _plausible_layouts(raw, path)
        raise ValueError(f"{path}: size {raw.size} bytes is not a whole number of points of {point_width} x "
                         f"{dtype.name} ({point_bytes} bytes each){_suggestion(fits, path)}")
    columns = raw_columns(path, point_width)
    stored = raw.view(dtype).reshape(-1, point_width)
    points = stored.astype(np.float32)
    if check_values:   # float64 checked as stored: garbage beyond float32's range would read as inf
        problem = implausibility(stored if dtype.itemsize > 4 else points, columns)
        if problem:
            fits = [fit for fit in _plausible_layouts(raw, path) if fit != (dtype, point_width)]
            raise ValueError(f"{path}: read as {dtype.name} x {point_width} ({', '.join(columns)}), the values are "
                             f"implausible: {problem}{_suggestion(fits, path)}")
    return PointFile(points, columns, layout)


def implausibility(points: np.ndarray, columns: tuple[str, ...], extra_non_negative: bool = False) -> str | None:
    """Why ``points`` (N, C) cannot be a LiDAR scan with these column names, or None when plausible.

    extra_non_negative: also require columns beyond the fourth to be >= 0 (ring, time lag,
    elongation are), used to rank candidate layouts of a misread file."""
    if len(points) == 0:
        return "no points"
    values = points if points.dtype.itemsize >= 4 else points.astype(np.float32)
    by_column = np.ascontiguousarray(values.T)   # numpy reduces (C, N) rows far faster than (N, C) columns
    if not np.isfinite(by_column).all():
        finite = np.isfinite(by_column)
        no_return = ~finite[:3].any(axis=0)   # organized clouds mark a missing return with NaN x, y, z
        bad = ~finite[:, ~no_return]
        if bad.any():
            column = int(np.nonzero(bad.any(axis=1))[0][0])
            return (f"{int(bad.sum())} values are NaN or infinite outside no-return rows (first in column {column}, "
                    f"{columns[column]})")
        by_column = by_column[:, ~no_return]
        if by_column.shape[1] == 0:
            return "every point is NaN"
    lows, highs = by_column.min(axis=1).astype(np.float64), by_column.max(axis=1).astype(np.float64)
    for index, name in enumerate(columns):
        low, high = float(lows[index]), float(highs[index])
        if name in ("x", "y", "z"):
            if max(-low, high) > MAX_COORDINATE_M:
                return f"{name} reaches {max(-low, high):.4g} m, beyond {MAX_COORDINATE_M:g} m"
        elif name == "intensity":
            if low < 0 or high > MAX_INTENSITY:
                return f"column {index} (intensity) spans {low:.4g}..{high:.4g}, expected 0..{MAX_INTENSITY:g}"
        elif name == "ring":
            if low < 0 or high > MAX_RING or not np.array_equal(by_column[index], np.round(by_column[index])):
                return f"column {index} (ring) spans {low:.4g}..{high:.4g}, expected whole numbers 0..{MAX_RING}"
        elif max(-low, high) > MAX_EXTRA_VALUE or (extra_non_negative and low < 0):
            return f"column {index} ({name}) spans {low:.4g}..{high:.4g}"
    if by_column.shape[1] > 1 and float((highs[:3] - lows[:3]).max()) < MIN_EXTENT_M:
        return f"all {by_column.shape[1]} points lie within {MIN_EXTENT_M * 100:g} cm of each other"
    return _repeating_blocks(by_column.T)


def _repeating_blocks(values: np.ndarray) -> str | None:
    """A row that holds several points (a 4-value layout read 8 wide) passes every range check; it
    shows as blocks of columns with the same value ranges as the first block (x, y, z, ...)."""
    width = values.shape[1]
    if width < 2 * MIN_CHANNELS:
        return None
    sample = values[:: max(1, len(values) // 20000)]
    quantiles = np.percentile(sample, [10, 50, 90], axis=0)           # (3, width), robust to outliers
    for block in range(MIN_CHANNELS, width // 2 + 1):
        if width % block:
            continue
        first = quantiles[:, :block]
        span = np.maximum(first[2] - first[0], 1e-6)
        same = all(np.all(np.abs(quantiles[:, start:start + block] - first) <= 0.2 * span)
                   for start in range(block, width, block))
        if same:
            return (f"every row repeats the value ranges of its first {block} columns {width // block} times: "
                    f"{width // block} points of {block} values per row")
    return None


def _plausible_layouts(raw: np.ndarray, path: str) -> list[tuple[np.dtype, int]]:
    """The (dtype, width) layouts whose read of ``raw`` is plausible, most informative first: widths
    with an intensity column (4+) before xyz-only ones; float32, float16, float64; narrower first."""
    fits = []
    for dtype in _CANDIDATE_DTYPES:
        for width in _CANDIDATE_WIDTHS:
            if raw.size % (width * dtype.itemsize):
                continue
            candidate = raw.view(dtype).reshape(-1, width)
            if implausibility(candidate, raw_columns(path, width), extra_non_negative=True) is None:
                fits.append((dtype, width))
    return sorted(fits, key=lambda fit: (fit[1] < 4, _CANDIDATE_DTYPES.index(fit[0]), fit[1]))


def _suggestion(fits: list[tuple[np.dtype, int]], path: str) -> str:
    if not fits:
        return (f"; no layout of {_CANDIDATE_WIDTHS.start}-{_CANDIDATE_WIDTHS.stop - 1} float16/32/64 values per "
                f"point reads plausibly: is it a point file?")
    dtype, width = fits[0]
    known = {(np.dtype(np.float32), 4): " (a KITTI .bin)", (np.dtype(np.float32), 5): " (a nuScenes .pcd.bin)"}
    others = ", ".join(f"{d.name} x {w}" for d, w in fits[1:3] if (w < 4) == (width < 4))
    return (f"; it reads plausibly as {dtype.name} x {width}{known.get((dtype, width), '')}: pass "
            f"point_width={width}, dtype='{dtype.name}'" + (f" (also plausible: {others})" if others else ""))


# ------------------------------------------------------------------------------ self-describing files

def _read_npy(path: str) -> PointFile:
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(b"\x93NUMPY"):
        if head.startswith(b"PK"):
            raise ValueError(f"{path}: an .npz archive named .npy; load the array it holds and save it with np.save")
        if head and all(byte in _PRINTABLE for byte in head):
            raise ValueError(f"{path}: a text file (starts {head[:40].decode('ascii')!r}), not an .npy array; "
                             f"load it with np.loadtxt and save it with np.save")
        pickle_hint = "; a pickle?" if head[:1] == b"\x80" else ""
        raise ValueError(f"{path}: not an .npy file (no NUMPY header{pickle_hint})")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise ValueError(f"{path}: holds Python objects (a pickle or an object array), not a numeric (N, C) "
                             f"array; refusing to unpickle it") from None
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: holds an .npz archive, not one .npy array")
    if array.dtype.names is not None:
        raise ValueError(f"{path}: a structured array with fields {array.dtype.names}; save a plain (N, C) float "
                         f"array (x, y, z first) instead")
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D float array (N, C>={MIN_CHANNELS}) with C <= {MAX_CHANNELS}, "
                         f"got {array.dtype} {array.shape}")
    if not MIN_CHANNELS <= array.shape[1] <= MAX_CHANNELS:
        hint = ""
        if MIN_CHANNELS <= array.shape[0] <= MAX_CHANNELS and array.shape[1] > MAX_CHANNELS:
            hint = f"; it looks transposed (channels first): save points.T, shape {array.shape[::-1]}"
        raise ValueError(f"{path}: expected a 2-D float array (N, C>={MIN_CHANNELS}) with C <= {MAX_CHANNELS}, "
                         f"got {array.dtype} {array.shape}{hint}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: expected a float array (N, C>=3), got {array.dtype} {array.shape}")
    columns = ("x", "y", "z", *(f"value{i}" for i in range(3, array.shape[1])))
    _check_float32_keeps(array, columns, path)
    return PointFile(array.astype(np.float32), columns, f"npy {array.dtype.name} {tuple(array.shape)}")


def _read_pcd(path: str) -> PointFile:
    PointCloud = require("pypcd4", f"reading the PCD file {path}").PointCloud
    try:
        cloud = PointCloud.from_path(path)
    except Exception as error:  # pypcd4 raises pydantic, struct and value errors for malformed headers
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable PCD file ({first_line})") from None
    metadata = cloud.metadata
    fields = list(metadata.fields)
    missing = [axis for axis in ("x", "y", "z") if axis not in fields]
    if missing:
        raise ValueError(f"{path}: PCD file has no {', '.join(missing)} field (fields: {' '.join(fields)})")
    skipped = [name for name, count in zip(fields, metadata.count)
               if name in ("_", "rgb", "rgba") or count != 1]
    kept = ["x", "y", "z"] + [name for name in fields if name not in ("x", "y", "z") and name not in skipped]
    if len(kept) > MAX_CHANNELS:
        raise ValueError(f"{path}: {len(kept)} scalar fields, more than {MAX_CHANNELS}: {' '.join(kept)}")
    data = cloud.pc_data
    array = np.column_stack([np.asarray(data[name]).reshape(-1) for name in kept]) if len(data) else \
        np.zeros((0, len(kept)))
    _check_float32_keeps(array, tuple(kept), path, source_dtypes=[data.dtype[name] for name in kept])
    encoding = getattr(metadata.data, "value", str(metadata.data))
    note = f", skipped {' '.join(skipped)}" if skipped else ""
    return PointFile(array.astype(np.float32), tuple(kept), f"PCD {encoding} ({' '.join(kept)}{note})")


def _read_las(path: str) -> PointFile:
    laspy = require("laspy", f"reading the LAS/LAZ file {path}")
    try:
        cloud = laspy.read(path)
    except Exception as error:  # laspy raises its own LaspyException family, and lazrs/IO errors
        raise ValueError(f"{path}: not a readable LAS/LAZ file ({error})") from None
    array = np.column_stack([np.asarray(cloud.x), np.asarray(cloud.y), np.asarray(cloud.z),
                             np.asarray(cloud.intensity, dtype=np.float64)])
    columns = ("x", "y", "z", "intensity")
    _check_float32_keeps(array, columns, path)
    return PointFile(array.astype(np.float32), columns, f"LAS {cloud.header.version} point format "
                                                        f"{cloud.header.point_format.id} (x y z intensity)")


def _check_float32_keeps(array: np.ndarray, columns: tuple[str, ...], path: str, source_dtypes=None) -> None:
    """Refuse values that float32 would round beyond use: coordinates by more than 1 cm, any other
    column by more than 1/1000 of its spread (e.g. absolute timestamps in seconds)."""
    dtypes = source_dtypes or [array.dtype] * array.shape[1]
    for index, (name, dtype) in enumerate(zip(columns, dtypes)):
        if np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16)) or np.dtype(dtype).itemsize <= 2:
            continue
        column = np.asarray(array[:, index], dtype=np.float64)
        column = column[np.isfinite(column)]
        if column.size == 0:
            continue
        error = float(np.abs(column - column.astype(np.float32).astype(np.float64)).max())
        spread = float(column.max() - column.min())
        if name in ("x", "y", "z"):
            tolerance = FLOAT32_COORDINATE_TOLERANCE_M
        else:
            tolerance = 1e-3 * spread if spread > 0 else 1e-6 * float(np.abs(column).max())
        if error > tolerance:
            raise ValueError(f"{path}: field {name} ({np.dtype(dtype).name}, {column.min():.10g}..{column.max():.10g}) "
                             f"loses up to {error:.3g} in float32; subtract an origin (or drop the field) first")
