"""Imports go one way: voxelize → backbones → detectors, with datasets (and its box geometry) below detectors;
visualization and the benchmarks sit on top, tools above everything; the top-level modules
optional_dependencies, atomic_files and machine_info sit below everything. Every import counts, function-level ones
included, so a lazy import cannot hide a cycle."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"voxelize", "backbones", "detectors", "datasets", "visualization", "benchmarks", "tools"}
MAY_IMPORT = {
    "voxelize": {"voxelize"},
    "backbones": {"voxelize", "backbones"},
    "datasets": {"datasets"},
    "detectors": {"voxelize", "backbones", "datasets", "detectors"},
    "visualization": {"voxelize", "backbones", "datasets", "detectors", "visualization"},
    "benchmarks": {"voxelize", "backbones", "datasets", "detectors", "benchmarks"},
}


def project_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_package_imports_a_higher_one(package):
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for name in project_imports(path) - MAY_IMPORT[package]}
    assert not wrong, sorted(wrong)


def test_the_rule_sees_a_lazy_import(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from detectors.centerpoint import CenterPoint\n    return CenterPoint\n")
    assert project_imports(module) == {"detectors"}
