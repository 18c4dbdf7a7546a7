"""The error every backend raises when an artifact file will not load."""

from pathlib import Path

from clsp.errors import ClspError


def unloadable(path: Path, what: str, error: BaseException) -> ClspError:
    """``<path>: not a loadable <what> (<first line of error>); export it again`` as a ClspError."""
    text = str(error).strip()
    first = text.splitlines()[0][:200] if text else type(error).__name__
    return ClspError(f"{path}: not a loadable {what} ({first}); export it again")
