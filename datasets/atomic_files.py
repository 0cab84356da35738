"""Writing files so that a reader never sees a half-written one."""
from __future__ import annotations

import json
import os
import tempfile


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    An interrupted write leaves the previous file (if any) untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
