"""The one exception type for errors a user can cause and fix."""


class ClspError(Exception):
    """A user-fixable error: the message names the file or field and says how to fix it.

    The CLI prints it on one line without a traceback and exits with status 2.
    """
