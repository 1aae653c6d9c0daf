"""service.memory: glibc malloc tuning, harmless where it does not apply."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from service import memory
from service.model import AutoEncoder
from tests.conftest import REPO


def test_without_glibc_they_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory._glibc() is None
    assert memory.keep_freed_blocks() is False
    assert memory.drop_cuda_library_pages() == 0


KEEP_FREED_BLOCKS = """
import resource, sys
import numpy as np
from service.memory import keep_freed_blocks
assert keep_freed_blocks()
for _ in range(5):  # warm: the heap grows to hold the blocks once
    blocks = [np.ones(size, np.uint8) for size in (6_000_000, 3_000_000, 800_000)]
    del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a forward pass's pattern: a few MB allocated, written, freed
    blocks = [np.ones(size, np.uint8) for size in (6_000_000, 3_000_000, 800_000)]
    del blocks
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""


@pytest.mark.skipif(memory._glibc() is None, reason="not glibc")
def test_kept_blocks_are_reused_without_page_faults() -> None:
    # its own process: malloc's thresholds are process-wide and stay set
    out = subprocess.run(
        [sys.executable, "-c", KEEP_FREED_BLOCKS], cwd=REPO, capture_output=True, text=True, check=True
    )
    faults_per_round = float(out.stdout.strip())
    assert faults_per_round < 20  # ~2,400 pages are written each round; mapped afresh, each would fault


MAPS = """\
7f40111c00000-7f402b0ea000 r-xp 00000000 fd:01 42 /venv/site-packages/nvidia/cu13/lib/libcublasLt.so.13
7f402b0ea000-7f402b100000 rw-p 01000000 fd:01 42 /venv/site-packages/nvidia/cu13/lib/libcublasLt.so.13
7f3f9f578000-7f3fb05b8000 r-xp 00000000 fd:01 43 /venv/site-packages/torch/lib/libtorch_cpu.so
7f3f8486d000-7f3f883f5000 r--p 00000000 fd:01 44 /venv/site-packages/torch/lib/libtorch_cuda.so
7f3f80000000-7f3f80001000 r-xp 00000000 fd:01 45 /venv/site-packages/nvidia/cu13/lib/libnvrtc.so.13
7f3f70000000-7f3f70001000 r--p 00000000 fd:01 46 /usr/lib/locale/libnvidia-notes.txt
7f3f50000000-7f3f50001000 r-xp 00000000 fd:01 47 /usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0
7f3f60000000-7f3f60001000 rw-p 00000000 00:00 0
55c4011ba000-55c408033000 rw-p 00000000 00:00 0 [heap]
"""


def test_only_read_only_mappings_of_cuda_libraries_are_picked() -> None:
    ranges = list(memory.cuda_library_ranges(MAPS.splitlines()))
    assert ranges == [
        (0x7F40111C00000, 0x7F402B0EA000),  # cuBLASLt code; its writable data stays
        (0x7F3F8486D000, 0x7F3F883F5000),  # torch's CUDA half; libtorch_cpu and libcurl are kept
        (0x7F3F80000000, 0x7F3F80001000),
    ]


@pytest.mark.skipif(memory._glibc() is None, reason="not glibc")
def test_dropping_cuda_code_covers_the_cuda_libraries_and_leaves_the_model_working(random_model: AutoEncoder) -> None:
    model = random_model.eval()
    x = torch.rand(4, 1, 28, 28)
    with open("/proc/self/maps") as maps:
        mapped = sum(end - start for start, end in memory.cuda_library_ranges(maps))
    if torch.version.cuda is not None:
        assert mapped > 100 * 2**20, "a CUDA build maps cuBLAS, cuDNN and the rest"
    with torch.inference_mode():
        before = model(x)
        assert memory.drop_cuda_library_pages() == mapped  # all of it asked for; none with a CPU build
        after = model(x)  # any page it needed comes back from disk
    assert torch.equal(before, after)


def test_resident_bytes_reads_this_process() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    assert memory.resident_bytes() > 10 * 2**20
