"""Writing files so that a reader never sees a half-written one."""
from __future__ import annotations

import io
import json
import os
import re
import tempfile

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    An interrupted write leaves the previous file (if any) untouched, and at worst a temporary
    ``.NAME.PID-XXXX.tmp`` beside it; the next write of ``path`` removes those of processes that
    are no longer running (:func:`remove_orphan_temporaries`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory, cannot write a file there", path)
    remove_orphan_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f"{_temporary_prefix(path)}{os.getpid()}-",
                                         suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_json_atomically(path: str, value) -> None:
    """Serialise ``value`` as indented JSON and write it with :func:`write_atomically`."""
    write_atomically(path, (json.dumps(value, indent=2) + "\n").encode())


def format_from_name(path: str, formats: dict[str, str], what: str) -> str:
    """The format that ``path``'s extension names in ``formats`` (extension → format), or a ValueError
    listing the extensions: a file is written in the format its name promises, or not at all."""
    encoding = formats.get(os.path.splitext(path)[1].lower())
    if encoding is None:
        raise ValueError(f"{path}: cannot tell the {what} format from the name; "
                         f"use one of {', '.join(sorted(formats))}")
    return encoding


def write_figure_atomically(figure, path: str, encoding: str, dpi: float) -> None:
    """Save a matplotlib Figure to ``path`` in ``encoding`` (e.g. from :func:`format_from_name`); a reader
    never sees half an image."""
    encoded = io.BytesIO()
    figure.savefig(encoded, dpi=dpi, format=encoding)
    write_atomically(path, encoded.getvalue())


def remove_orphan_temporaries(path: str) -> list[str]:
    """Remove the temporaries that interrupted writes of ``path`` left behind; returns their paths.

    A temporary is an orphan when the process that wrote it (the PID in its name) is not running on
    this machine; one of a running process may be a write in progress and is left alone.
    """
    folder, prefix = os.path.dirname(os.path.abspath(path)), _temporary_prefix(path)
    # PID-random (this module) or random alone (mkstemp names of earlier versions); nothing else, so
    # that the temporaries of a longer name with the same beginning ("a.json.bak") are not touched.
    pattern = re.compile(re.escape(prefix) + r"(?:(\d+)-)?[a-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX))
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(name)
        if match is None or (match.group(1) is not None and _process_running(int(match.group(1)))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
        except FileNotFoundError:  # another writer removed it first
            pass
    return removed


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _process_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
