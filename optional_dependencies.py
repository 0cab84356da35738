"""Imports of the packages that the core install leaves to pip extras, with an error that says which extra.

The core install (torch, numpy, pyyaml, tqdm) runs the torch backend, the voxelizer and the detector.
spconv, Open3D / matplotlib and the nuScenes devkit come with ``pip install 'sparsevox[EXTRA]'``.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# Top-level module → the extra that installs it.
EXTRAS = {"spconv": "spconv", "cumm": "spconv", "open3d": "viz", "matplotlib": "viz", "nuscenes": "nuscenes",
          "pypcd4": "pointfiles", "laspy": "pointfiles", "lazrs": "pointfiles"}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """``import module`` (dotted names allowed) for ``purpose`` (e.g. "the spconv backend"), or raise
    MissingExtraError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is None or error.name.split(".")[0] != top or top not in EXTRAS:
            raise
        raise MissingExtraError(f"{purpose} needs the package {top!r}, which is not installed: "
                                f"pip install 'sparsevox[{EXTRAS[top]}]'") from error


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing anything heavy beyond it)."""
    return importlib.util.find_spec(module) is not None
