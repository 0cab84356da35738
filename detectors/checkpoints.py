"""Checkpoints that cannot run code: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts, None): the model's
``state_dict`` under ``'model'``, and for a training run the optimizer and scheduler states, the
epoch, the position in it, the step count and the random-number states (``rng``, as tensors and
plain lists, see :func:`rng_states`). A pickle that would build any other object (a class, a
function call) is refused by :func:`load_checkpoint` before anything of it runs. A bare
``state_dict`` file is accepted where only weights are needed (:func:`model_state`).

Checkpoints of earlier versions stored NumPy's random state as a NumPy array; plain NumPy arrays
(:data:`NUMPY_ARRAY_GLOBALS`: the array type, its dtype and its rebuilding function, nothing that
calls other code) are therefore accepted too, so those runs still resume and evaluate.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import re
import zipfile

import numpy as np
import torch

from atomic_files import write_atomically

NUMPY_ARRAY_GLOBALS = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` (tensors and plain values only, so that :func:`load_checkpoint` reads it back)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """The dict saved at ``path``, loaded with ``weights_only=True``.

    Raises FileNotFoundError / IsADirectoryError for a missing path or a folder, and ValueError naming
    the file when it is not a PyTorch checkpoint, when its pickle asks for anything beyond tensors and
    plain containers (nothing of it is executed), or when it does not hold a dict.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(2, "checkpoint not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "expected a checkpoint file, got a folder", path)
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is long and ends with advice to load unsafely; keep the refused part only.
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:
            raise ValueError(f"{path}: refused: the checkpoint's pickle asks for {refused.group(1)}, which is not a "
                             f"tensor or a plain value; sparsevox never runs code from a checkpoint") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
        raise ValueError(f"{path}: not a PyTorch checkpoint of tensors and plain values "
                         f"({detail.group(1) if detail else 'unreadable pickle'})") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, AttributeError, UnicodeDecodeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "empty or truncated"
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(error).__name__}: {detail})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint dict or a state_dict, got {type(state).__name__}")
    return state


def model_state(checkpoint: dict, path: str = "checkpoint") -> dict:
    """The model's ``state_dict`` of a checkpoint (``checkpoint['model']``), or the dict itself when it
    is a bare ``state_dict`` (every value a tensor)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path}: holds no model weights (neither a 'model' state_dict nor a bare state_dict)")
    return state


def load_model_weights(model: torch.nn.Module, path: str, map_location="cpu") -> dict:
    """Load the weights of the checkpoint at ``path`` into ``model``; returns the checkpoint dict.

    A checkpoint of another model shape (other channels, classes, layers) raises ValueError listing
    the differing parameters, instead of loading part of it.
    """
    checkpoint = load_checkpoint(path, map_location)
    load_state_checked(model, model_state(checkpoint, path), path)
    return checkpoint


def load_state_checked(model: torch.nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)``, with a one-line error naming up to five differing parameters."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [f"{key} {list(state[key].shape)} vs {list(value.shape)}" for key, value in expected.items()
                if key in state and state[key].shape != value.shape]
    problems = []
    for label, items in (("shape (checkpoint vs model)", reshaped), ("missing", missing),
                         ("not in the model", unexpected)):
        if items:
            problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}")
    if problems:
        raise ValueError(f"{source}: the weights do not fit the model of this config; " + "; ".join(problems))
    model.load_state_dict(state)


def rng_states() -> dict:
    """Python's, NumPy's and torch's global random states as tensors and plain lists (weights_only-safe)."""
    version, python_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": {"version": version, "state": list(python_state), "gauss_next": gauss},
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def restore_rng_states(states: dict) -> None:
    """Set the global random states saved by :func:`rng_states` (or, from checkpoints of earlier
    versions, the tuples of ``random.getstate()`` and ``np.random.get_state()``)."""
    python, numpy_state = states["python"], states["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"]), python["gauss_next"])
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].cpu().numpy().astype(np.uint32)
        numpy_state = (numpy_state["name"], keys, numpy_state["position"], numpy_state["has_gauss"],
                       numpy_state["cached_gaussian"])
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"].cpu())
