"""Crash-safe files: atomic writes, permissions, and JSON lines that survive a torn write."""
import os
import stat

import pytest

from hybridseq.io import append_jsonl, atomic_write_bytes, atomic_write_text, read_jsonl


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")                       # fails inside the write
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        append_jsonl(tmp_path / "b.jsonl", {"x": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_append_after_a_torn_line_keeps_the_next_record(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"run": 1})
    with open(path, "a") as f:
        f.write('{"run": 2, "sta')                                  # a kill during the write
    append_jsonl(path, {"run": 3})
    assert read_jsonl(path) == [{"run": 1}, {"run": 3}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []

