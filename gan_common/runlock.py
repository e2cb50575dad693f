"""One training process per run folder: an exclusive OS lock on `<run>/.lock`, held for the whole run.

Two processes resuming one folder would write the same checkpoint steps and interleave metrics.jsonl.
The lock is `fcntl.flock` on an open file: the kernel drops it when its holder exits, however it exits
(kill -9, out of memory, power loss of a local disk), so a stale lock never blocks; no pid check is needed.
The pid written into the file is only there to name the holder in the refusal.
"""

from __future__ import annotations

import errno
import os
import sys

from gan_common.errors import UserError, os_error_text

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock (the run still works)
    fcntl = None

LOCK_FILE = ".lock"
# flock on a filesystem that has none (Lustre without -o flock, some FUSE mounts): warn and run unlocked.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class RunLock:
    """`with RunLock(folder):` holds the folder's lock, or raises UserError naming the holder's pid."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise UserError(f"cannot open the run folder's lock file {self.path}: {os_error_text(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            folder = os.path.dirname(self.path)
            raise UserError(f"--out-dir {folder!r} is in use by another training run (pid {holder}); wait for it to "
                            f"end or stop it, or choose another --out-dir") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _NO_LOCKS:
                raise UserError(f"cannot lock {self.path}: {os_error_text(e)}") from None
            print(f"warning: {self.path}: this filesystem has no file locks ({os_error_text(e)}); nothing stops a "
                  f"second run in the same --out-dir", file=sys.stderr)
            return self
        self._fd = fd
        try:  # our pid, for a second process's refusal; the lock holds without it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:  # closing drops the lock; the file stays (deleting it would race a newcomer)
            os.close(self._fd)
            self._fd = None
