"""Finding, compiling and refusing the kernel library; the engine's fallback switch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from core.kernels import build

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")


@needs_cc
def test_compiles_once_into_the_cache_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path))
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "libtpi_kernels-0ld.so").write_bytes(b"an older build")
    first = build.find_or_build()
    assert first.parent == tmp_path / "kernels" and first.name == build.library_name()
    stamp = first.stat().st_mtime_ns
    assert build.find_or_build() == first and first.stat().st_mtime_ns == stamp
    # no temp files left, and the older build is gone
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_a_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(build.KernelBuildError, match="no C compiler \\('no-such-cc'\\)"):
        build.find_or_build()


def test_a_failing_compile_names_the_compiler_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(build.KernelBuildError, match="'false' could not compile"):
        build.find_or_build()
    assert not any((tmp_path / "kernels").iterdir())


def test_the_name_changes_with_the_source(tmp_path, monkeypatch):
    copy = tmp_path / "decode_ops.c"
    copy.write_text(build.SOURCES[1].read_text() + "\n/* edited */\n")
    before = build.library_name()
    monkeypatch.setattr(build, "SOURCES", [build.SOURCES[0], copy])
    assert build.library_name() != before


@needs_cc
def test_a_shipped_library_is_used_before_the_cache(tmp_path, monkeypatch):
    """The bundle's layout: the library beside the sources, written by `-m core.kernels.build`."""
    for src in build.SOURCES + build.HEADERS:
        shutil.copy(src, tmp_path / src.name)
    monkeypatch.setattr(build, "HERE", tmp_path)
    monkeypatch.setattr(build, "SOURCES", [tmp_path / s.name for s in build.SOURCES])
    monkeypatch.setattr(build, "HEADERS", [tmp_path / s.name for s in build.HEADERS])
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path / "cache"))
    assert build.main([str(tmp_path)]) == 0
    assert build.find_or_build() == tmp_path / build.library_name()
    assert not (tmp_path / "cache" / "kernels").exists()


def test_turning_kernels_off_leaves_torchs_path(tmp_path):
    code = "from core.kernels.library import kernels; print(kernels() is None)"
    env = dict(os.environ, TPI_CHAT_KERNELS="0", TPI_CHAT_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "True"
