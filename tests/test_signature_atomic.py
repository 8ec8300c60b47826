"""write_atomic: the old file or the whole new one, never a part, and no debris."""

from __future__ import annotations

import os
import stat

import pytest

from audit.atomic import write_atomic
from audit.errors import InputError


def test_writes_and_replaces_with_umask_permissions(tmp_path):
    target = tmp_path / "report.pdf"
    assert write_atomic(target, b"first") == target
    write_atomic(target, b"second version")
    assert target.read_bytes() == b"second version"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["report.pdf"]


def test_private_mode(tmp_path):
    write_atomic(tmp_path / "key.p12", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "key.p12").stat().st_mode) == 0o600


def test_failure_while_writing_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_atomic(target, b'{"old": true}')

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(InputError, match="cannot write .*results.json: No space left on device"):
        write_atomic(target, b'{"new": true}')
    assert target.read_bytes() == b'{"old": true}'
    assert os.listdir(tmp_path) == ["results.json"]


def test_failure_to_rename_leaves_no_temporary_file(tmp_path):
    (tmp_path / "report.pdf").mkdir()
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(tmp_path / "report.pdf", b"data")
    assert os.listdir(tmp_path) == ["report.pdf"]


def test_missing_directory_is_one_line(tmp_path):
    with pytest.raises(InputError, match="No such file or directory") as err:
        write_atomic(tmp_path / "absent" / "report.pdf", b"data")
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path) == []
