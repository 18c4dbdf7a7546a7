"""The one exception type for errors a user can cause and fix, and the one line for a full or read-only disk."""

import errno
import shutil
from pathlib import Path


class ClspError(Exception):
    """A user-fixable error: the message names the file or field and says how to fix it.

    The CLI prints it on one line without a traceback and exits with status 2.
    """


def os_error_line(error: OSError) -> str:
    """One line for a disk-full, read-only or permission error: the path, what happened, what is free, the fix."""
    where = Path(error.filename) if error.filename else None
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = where.parent if where is not None else Path.cwd()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free / 2**20
        fix = f"{free:.0f} MiB free there; free some space (finished work is kept), then rerun the command"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make the folder writable, or set another run.output_dir (--set run.output_dir=...)"
    else:
        fix = "check the path and the disk"
    return f"{where or 'a file'}: {reason}; {fix}"


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors of the disk or the folder, not of clsp: the CLI prints them as :func:`os_error_line`."""
