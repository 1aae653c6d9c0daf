"""service.memory: glibc malloc tuning, harmless where it does not apply."""

from __future__ import annotations

import sys

import pytest

from service import memory


@pytest.mark.skipif(memory._glibc() is None, reason="not glibc")
def test_on_glibc_both_calls_take_effect() -> None:
    assert memory.limit_malloc_arenas(8) is True  # 8: glibc's own per-core default, harmless to set in tests
    assert memory.release_free_memory() in (True, False)  # 1 when it released something, else 0


def test_without_glibc_they_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory._glibc() is None
    assert memory.limit_malloc_arenas(2) is False
    assert memory.release_free_memory() is False
