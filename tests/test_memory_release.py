"""What a finished step freed goes back to the operating system before the next one (edgekit.memory):
real glibc allocations from a worker thread's arena, as TensorFlow's converter makes them."""
from __future__ import annotations

import subprocess
import sys

import pytest

CHURN = r"""
import ctypes, os, threading
from edgekit.memory import release_freed_memory

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
CHUNK = 64 * 1024  # below glibc's mmap threshold: from an arena, as most of a conversion's tensors are


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn() -> None:
    chunks = [libc.malloc(CHUNK) for _ in range(4096)]  # 256 MB, touched
    for chunk in chunks:
        ctypes.memset(chunk, 1, CHUNK)
    for chunk in chunks[:-1]:  # the last one stays: the arena's top cannot shrink on its own
        libc.free(chunk)


worker = threading.Thread(target=churn)
worker.start()
worker.join()
before = rss()
release_freed_memory()
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_arena_memory_goes_back_to_the_system() -> None:
    returned = int(subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True).stdout)
    assert returned > 200 * 2**20, f"only {returned / 2**20:.0f} MB of 256 MB freed went back"
