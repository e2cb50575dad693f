"""User errors: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix (a flag, a file, a folder); the message says what and how."""


def os_error_text(e: OSError) -> str:
    """`No space left on device (ENOSPC)`: the words, and the errno name a user can search for."""
    name = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror or e} ({name})" if name else str(e.strerror or e)


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI `main` so that a UserError prints `error: ...` on stderr and exits with 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapped
