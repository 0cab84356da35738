"""keep_freed_memory: a freed 64 MB block stays in the process (glibc), checked in a fresh process."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import ctypes, sys
from voxelize.allocator import keep_freed_memory, malloc_setting
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert malloc_setting() == "default"
    print(keep_freed_memory(), file=sys.stderr)
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
libc.free(block)
print(libc.mallinfo2().fordblks >= 64 << 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_large_block_is_kept_only_when_asked():
    def held(mode):
        run = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[2])  # `python -c` imports from the cwd
        return run.stdout.strip(), run.stderr
    kept, note = held("keep")
    if "glibc" in note or "refused" in note:
        pytest.skip(f"allocator setting unavailable here: {note.strip()}")
    assert kept == "True", note
    assert held("default")[0] == "False"
