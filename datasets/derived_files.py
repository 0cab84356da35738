"""Files derived from a dataset (the info cache, the GT-sampling database) that cannot go stale.

Each derived file carries the key it was built from: everything its content depends on (dataset
version, split, sweeps, class names, a format version) and a fingerprint of the source files
(size and modification time of each). A reader compares the stored key with the one it expects and
rebuilds on any difference. Files are numpy ``.npz`` archives of plain arrays with the key as a
JSON string inside, read with ``allow_pickle=False``: nothing in them can run code.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np

from atomic_files import write_atomically

_KEY_MEMBER = "derived_file_key"


class NotADerivedFile(ValueError):
    """The file exists but is not an archive this module wrote (or is damaged)."""


def user_cache_dir() -> str:
    """``$SPARSEVOX_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsevox``, else ``~/.cache/sparsevox``."""
    if os.environ.get("SPARSEVOX_CACHE_DIR"):
        return os.environ["SPARSEVOX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sparsevox")


def cache_folder(dataset_root: str, cache_dir: str | None = None) -> str:
    """Where caches of a dataset go: ``cache_dir`` when given, else the dataset folder when it is
    writable, else :func:`user_cache_dir` (a dataset on a read-only mount or owned by someone else)."""
    if cache_dir:
        return cache_dir
    if os.access(dataset_root, os.W_OK):
        return dataset_root
    return user_cache_dir()


def files_fingerprint(paths) -> list[list]:
    """[[path, size in bytes, modification time in ns], ...] of ``paths``, in the given order; a
    missing file gets size -1, so its appearance later changes the fingerprint too."""
    fingerprint = []
    for path in paths:
        try:
            status = os.stat(path)
            fingerprint.append([os.path.basename(path), status.st_size, status.st_mtime_ns])
        except FileNotFoundError:
            fingerprint.append([os.path.basename(path), -1, 0])
    return fingerprint


def files_summary(paths: list[str], root: str = "") -> dict:
    """Count, total size and a digest of the names (``paths``, relative to ``root`` when given), sizes
    and modification times of many files: a short key entry that still changes when any one does."""
    fingerprint = files_fingerprint(os.path.join(root, path) for path in paths)
    named = [[path, size, mtime] for path, (_, size, mtime) in zip(paths, fingerprint)]
    return {"files": len(paths), "bytes": int(sum(max(size, 0) for _, size, _ in fingerprint)),
            "digest": key_digest({"files": named})}


def folder_content_digest(root: str, exclude=()) -> dict:
    """Count, total size and a sha256 of the relative paths and contents of every file under ``root``,
    skipping hidden files and folders (the caches this module writes there) and the paths in
    ``exclude`` (other files derived from the data, such as a GT-sampling database kept in the
    folder, which exist or not depending on what ran before): what a result that must be
    reproducible across machines is keyed by, where a fresh copy of the same data has new
    modification times. Reads every byte (about 1 s per 600 MB here)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such dataset folder")
    excluded = {os.path.realpath(path) for path in exclude}
    digest, files, total = hashlib.sha256(), 0, 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(name for name in names if not name.startswith(".")):
            path = os.path.join(folder, name)
            if os.path.realpath(path) in excluded:
                continue
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                size = 0
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
                    size += len(block)
            digest.update(size.to_bytes(8, "little"))
            files, total = files + 1, total + size
    return {"files": files, "bytes": total, "sha256": digest.hexdigest()}


def key_digest(key: dict) -> str:
    """A short stable hex digest of a JSON-serialisable key, for file names."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def write_derived_file(path: str, key: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (plain numeric or fixed-width string arrays, no objects) and ``key`` to
    ``path`` as one ``.npz`` archive, atomically."""
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise TypeError(f"{path}: array {name!r} holds Python objects; derived files hold plain arrays only")
    buffer = io.BytesIO()
    np.savez(buffer, **{_KEY_MEMBER: np.array(json.dumps(key, sort_keys=True))}, **arrays)
    write_atomically(path, buffer.getvalue())


def read_derived_file(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(key, arrays) of a file written by :func:`write_derived_file`.

    Raises:
        FileNotFoundError: no such file.
        NotADerivedFile: the file is not such an archive (a pickle, truncated, another program's npz).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files") or _KEY_MEMBER not in archive.files:
                raise NotADerivedFile(f"{path}: not a sparsevox derived file (no {_KEY_MEMBER} member)")
            key = json.loads(str(archive[_KEY_MEMBER][()]))
            arrays = {name: archive[name] for name in archive.files if name != _KEY_MEMBER}
    except NotADerivedFile:
        raise
    except Exception as error:  # zipfile, pickle refusal, JSON, truncated members: all mean "not ours"
        raise NotADerivedFile(f"{path}: not a readable sparsevox derived file ({type(error).__name__}: {error})") \
            from None
    if not isinstance(key, dict):
        raise NotADerivedFile(f"{path}: its key is not a JSON object")
    return key, arrays


def key_differences(stored: dict, expected: dict) -> list[str]:
    """Names of the top-level key fields that differ (for a message saying why a file is rebuilt)."""
    expected = json.loads(json.dumps(expected, sort_keys=True))   # tuples → lists, as stored
    return sorted(name for name in set(stored) | set(expected) if stored.get(name) != expected.get(name))
