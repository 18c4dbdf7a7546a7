import os
import stat
from pathlib import Path

import pytest

from clsp.atomic import atomic_write_text, file_in_the_way


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "run" / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\ud800")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert file_in_the_way(tmp_path / "file") == tmp_path / "file"
    assert file_in_the_way(tmp_path / "file" / "sub" / "deeper") == tmp_path / "file"
    assert file_in_the_way(tmp_path / "new" / "sub") is None
    assert file_in_the_way(tmp_path) is None


def test_files_get_the_umask_mode_whoever_wrote_them(tmp_path):
    import os

    import torch
    from safetensors.torch import save_file

    from clsp.atomic import atomic_write, default_file_mode, give_default_modes

    path = atomic_write(tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, str(tmp)))
    assert os.stat(path).st_mode & 0o777 == default_file_mode() == 0o666 & ~_umask()
    save_file({"a": torch.zeros(2)}, str(tmp_path / "raw.safetensors"))
    assert os.stat(tmp_path / "raw.safetensors").st_mode & 0o777 == 0o600  # what safetensors does by itself
    give_default_modes(tmp_path)
    assert os.stat(tmp_path / "raw.safetensors").st_mode & 0o777 == default_file_mode()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
