"""Atomic writes honour the umask: files and folders get what open()/mkdir() would give, not mkstemp's 0600/0700.

``os.umask`` is process-wide: every test sets it inside ``tests.umask.umask``, which restores it in ``finally``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from perceptra_seg.utils.atomic import atomic_write, current_umask, default_dir_mode, write_bytes_atomic
from tests.umask import umask

UMASKS = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), UMASKS)
def test_atomic_file_gets_the_mode_open_would_give(tmp_path: Path, mask: int, file_mode: int, dir_mode: int) -> None:
    with umask(mask):
        assert current_umask() == mask and default_dir_mode() == dir_mode
        write_bytes_atomic(tmp_path / "out.bin", b"payload")
        with open(tmp_path / "plain.bin", "wb") as handle:  # the reference: what a plain open() gives
            handle.write(b"payload")
    assert _mode(tmp_path / "out.bin") == _mode(tmp_path / "plain.bin") == file_mode
    assert (tmp_path / "out.bin").read_bytes() == b"payload"


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), UMASKS[:2])
def test_export_folder_gets_the_mode_mkdir_would_give(tmp_path: Path, mask: int, file_mode: int, dir_mode: int) -> None:
    pytest.importorskip("onnx")
    from perceptra_seg.backends.export import _publish, _staging

    target = tmp_path / "exports" / "sam_v1-vit_b"
    with umask(mask), _staging(target) as staging:
        (staging / "manifest.json").write_text("{}")
        _publish(staging, target)
    assert _mode(target) == dir_mode and _mode(target / "manifest.json") == file_mode
