"""Shared test fixtures: the real scans beside the checkout (tests skip when they are absent), and a
command-line tool run in this process."""
import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from optional_dependencies import EXTRAS, available

TOOLS = Path(__file__).resolve().parents[1] / "tools"
REAL_DATA = Path(os.environ.get("SPARSEVOX_REAL_DATA",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))

KITTI_SCANS = ["kitti/velodyne/000000.bin", "kitti/velodyne/000001.bin"]
NUSCENES_KEYFRAME = "nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
NUSCENES_SWEEPS = "nuscenes/sweeps10_float16_N5.bin"


def levelled(frame: dict):
    """(points (N, 3) float64, boxes (M, 7)) of a nuScenes-layout frame with its LiDAR mount's pitch and roll
    undone: the boxes are upright in the world and the LiDAR frame is tilted with its mount, so points are
    counted in boxes (as the writer's num_lidar_pts) in this frame. The loader kept only each box's yaw in the
    tilted frame (off by ~tilt^2 here), and returns lie on the faces of the tight boxes: compare counts
    with a few millimetres of margin either way."""
    import numpy as np

    mount = frame["meta"]["lidar_to_ego"][:3, :3]
    c, s = mount[0, 0], mount[1, 0]
    norm = np.hypot(c, s)
    level = np.array([[c / norm, s / norm, 0], [-s / norm, c / norm, 0], [0, 0, 1]]) @ mount  # Rz(-yaw) mount
    boxes = np.asarray(frame["gt_boxes"], dtype=np.float64)[:, :7].copy()
    boxes[:, :3] = boxes[:, :3] @ level.T
    heading = np.column_stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))]) @ level.T
    boxes[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return frame["points"][:, :3].astype(np.float64) @ level.T, boxes


@pytest.fixture
def real_file():
    """Returns a function: relative path under ../shared/data/real → Path, skipping when absent."""
    def find(relative: str) -> Path:
        path = REAL_DATA / relative
        if not path.is_file():
            pytest.skip(f"real data not available: {path}")
        return path
    return find


# Without an extra (pip install 'sparsevox[EXTRA]'), the tests that need it skip rather than fail: the
# visualization folder is not collected without Open3D, and a test (or its fixtures) that reaches an
# optional package which is missing is reported as skipped, naming the extra.
collect_ignore_glob = [] if available("open3d") and available("matplotlib") else ["visualization/*"]


def _missing_extra(error: ImportError) -> str | None:
    top = (error.name or "").split(".")[0]
    return EXTRAS.get(top) if top and not available(top) else None


def skip_if_extra_missing(output: str) -> None:
    """Skip when a tool run in a subprocess (or in-process, caught by run_tool) stopped because an optional
    package is missing: its one error line names the package."""
    for package in re.findall(r"needs the package '(\w+)', which is not installed", output):
        if not available(package):
            pytest.skip(f"needs the optional package {package!r}: pip install 'sparsevox[{EXTRAS[package]}]'")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _skip_when_extra_missing())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _skip_when_extra_missing())


def _skip_when_extra_missing():
    try:
        return (yield)
    except ImportError as error:
        extra = _missing_extra(error) or _missing_extra(error.__cause__ or error)
        if extra is None:
            raise
        pytest.skip(f"needs the optional package {error.name or error.__cause__.name!r}: "
                    f"pip install 'sparsevox[{extra}]'")


def run_tool_here(tool: str, *arguments, cwd=TOOLS.parent) -> subprocess.CompletedProcess:
    """tools/TOOL.py run as ``__main__`` in this process, as a shell would run it but without SPARSEVOX_DEBUG:
    its exit code, stdout and stderr. A fresh interpreter would spend ~3 s importing torch; a suite of tool
    tests that each paid it would not keep to its time. An exception other than SystemExit (a bug, which the
    script would print as a traceback) propagates into the test."""
    script, stdout, stderr = str(TOOLS / f"{tool}.py"), io.StringIO(), io.StringIO()
    argv, path, here, excepthook = sys.argv, list(sys.path), os.getcwd(), sys.excepthook
    debug = os.environ.pop("SPARSEVOX_DEBUG", None)
    sys.argv = [script, *map(str, arguments)]
    sys.path.insert(0, str(TOOLS))
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    finally:
        sys.argv, sys.path[:], sys.excepthook = argv, path, excepthook  # tools/command_line.py sets the hook
        os.chdir(here)
        if debug is not None:
            os.environ["SPARSEVOX_DEBUG"] = debug
    return subprocess.CompletedProcess([script, *arguments], code, stdout.getvalue(), stderr.getvalue())
