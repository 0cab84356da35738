"""Every command-line tool answers bad input with one line ``TOOL: error: ...`` and exit code 2 (not
a traceback), and shows the traceback with --debug or SPARSEVOX_DEBUG=1."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "centerpoint_synthetic_cpu.yaml")


def run_tool(tool: str, *arguments, env=None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    environment.pop("SPARSEVOX_DEBUG", None) if not env or "SPARSEVOX_DEBUG" not in env else None
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, arguments)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)


def assert_one_error_line(completed: subprocess.CompletedProcess, tool: str, *fragments: str) -> str:
    assert completed.returncode == 2, (completed.returncode, completed.stderr[-3000:])
    assert "Traceback" not in completed.stderr + completed.stdout, completed.stderr[-3000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith(f"{tool}.py: error: ")]
    assert len(lines) == 1, completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """A small (N, 4) cloud as .npy: enough for the tools to get past reading it."""
    path = tmp_path_factory.mktemp("scan") / "cloud.npy"
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-20, 20, (2000, 2)), rng.uniform(-2, 1, 2000), rng.uniform(0, 1, 2000)])
    np.save(path, points.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "marker"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"model": {"weight": Payload()}}, folder / "hostile.pt")
    return folder / "hostile.pt", marker


def test_train_refuses_a_missing_config_an_occupied_run_folder_and_resume_without_checkpoint(tmp_path):
    assert_one_error_line(run_tool("train", tmp_path / "nope.yaml", "--out", tmp_path / "run"), "train",
                          "config file not found", "nope.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"a checkpoint")
    assert_one_error_line(run_tool("train", CONFIG, f"dataset.root={tmp_path}", "--out", run), "train",
                          "already holds a checkpoint", "--resume", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == b"a checkpoint" and sorted(os.listdir(run)) == ["checkpoint.pt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(run_tool("train", CONFIG, f"dataset.root={tmp_path}", "--out", empty, "--resume"), "train",
                          "holds no checkpoint.pt")
    assert_one_error_line(run_tool("train", CONFIG, "train.epochs=0", f"dataset.root={tmp_path}", "--out", empty,
                                   "--max-steps", "0"), "train", "max_steps must be at least 1")
    assert list(empty.iterdir()) == []


def test_evaluate_refuses_a_hostile_or_missing_checkpoint(tmp_path, hostile):
    path, marker = hostile
    assert_one_error_line(run_tool("evaluate", CONFIG, path, f"dataset.root={tmp_path}", "--out", tmp_path / "eval"),
                          "evaluate", "refused", "never runs code")
    assert not marker.exists()
    assert_one_error_line(run_tool("evaluate", CONFIG, tmp_path / "missing.pt", f"dataset.root={tmp_path}", "--out",
                                   tmp_path / "eval"), "evaluate", "checkpoint not found", "missing.pt")


def test_densify_refuses_missing_scans_hostile_weights_and_a_fractional_k(tmp_path, scan, hostile):
    assert_one_error_line(run_tool("densify", tmp_path / "nope.bin"), "densify", "nope.bin")
    path, marker = hostile
    assert_one_error_line(run_tool("densify", scan, "--weights", path), "densify", "refused")
    assert not marker.exists()
    for value in ("1.5", "0", "-3"):
        assert_one_error_line(run_tool("densify", scan, "--prune-topk", value), "densify",
                              "prune_topk must be a fraction in (0, 1) or a whole number of sites k >= 1")


def test_visualize_refuses_missing_scans_unknown_image_types_and_an_inverted_view_range(tmp_path, scan):
    assert_one_error_line(run_tool("visualize", "--scan", tmp_path / "nope.bin", "--save", tmp_path / "v.png"),
                          "visualize", "nope.bin")
    assert_one_error_line(run_tool("visualize", "--scan", scan, "--save", tmp_path / "v.bmp"), "visualize",
                          "cannot tell the image format", ".jpg")
    assert_one_error_line(run_tool("visualize", "--scan", scan, "--view-range", "10", "10", "-10", "-10", "--save",
                                   tmp_path / "v.png"), "visualize", "x0 < x1 and y0 < y1",
                          "[10.0, 10.0, -10.0, -10.0]")
    assert_one_error_line(run_tool("visualize", "--scan", scan, "--columns", "0", "--save", tmp_path / "v.png"),
                          "visualize", "--columns must be at least 1")
    assert_one_error_line(run_tool("visualize", "--scan", scan, "--score-threshold", "30", "--save",
                                   tmp_path / "v.png"), "visualize", "--score-threshold is a detection score in [0, 1]")
    assert not list(tmp_path.glob("v.*"))


def test_make_synthetic_benchmark_and_demo_name_the_bad_path(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert_one_error_line(run_tool("make_synthetic", "--out", a_file, "--scenes", "1"), "make_synthetic", "a_file")
    assert_one_error_line(run_tool("benchmark", "train", "--database", tmp_path / "nodb", "--steps", "1",
                                   "--workers", "0", "--backends", "torch"), "benchmark", "nodb")
    assert_one_error_line(run_tool("demo", "--out", a_file), "demo", "a_file")
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("switch", ["--debug", "SPARSEVOX_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, switch):
    arguments = [tmp_path / "nope.yaml", "--out", tmp_path / "run"]
    completed = run_tool("train", *arguments, "--debug") if switch == "--debug" else \
        run_tool("train", *arguments, env={"SPARSEVOX_DEBUG": "1"})
    assert completed.returncode == 1 and "Traceback" in completed.stderr and "ConfigError" in completed.stderr


def test_one_line_for_every_kind_of_input_error():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from command_line import error_line
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert error_line(ValueError("bad\n  value")) == "bad value"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x/y.bin")) == \
        "No such file or directory: /x/y.bin"
    assert error_line(KeyError("car")) == "KeyError: car"
    assert error_line(IndexError("--index 9 is not a frame")) == "--index 9 is not a frame"
    assert error_line(FileNotFoundError("point file not found: a.bin")) == "point file not found: a.bin"
