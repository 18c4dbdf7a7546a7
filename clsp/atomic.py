"""File helpers: atomic writes (a reader sees the old file or the complete new one, never a partial one) and
content hashes."""

import functools
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def file_in_the_way(folder: str | Path) -> Path | None:
    """The nearest existing path among ``folder`` and its parents when it is not a folder (so ``folder`` cannot be
    created or used); None when ``folder`` is a folder or could be made one."""
    for path in (Path(folder), *Path(folder).parents):
        if path.is_symlink() and not path.exists():
            return path  # a dangling symlink: nothing can be created through it
        if path.exists():
            return None if path.is_dir() else path
    return None


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def give_default_modes(folder: Path) -> None:
    """Give every file in ``folder`` :func:`default_file_mode` (safetensors writes its files 0600)."""
    mode = default_file_mode()
    for path in Path(folder).iterdir():
        if path.is_file():
            os.chmod(path, mode)


def _new_temp_file(path: Path) -> Path:
    """An empty file beside ``path`` with the mode the umask gives new files (``tempfile.mkstemp``'s is 0600)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp{path.suffix}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())  # a writer may have replaced the file with its own mode (safetensors: 0600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_folder(new: Path, target: Path) -> None:
    """Make the finished folder ``new`` (beside ``target``) the ``target``, so an interruption never leaves half a
    folder: the old one is renamed aside first and removed last."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, computed once per process for each (path, size, modification time)."""
    stat = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
