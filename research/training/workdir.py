"""One workdir, one writer: an exclusive lock held for the life of a run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator

from research.training.errors import WorkdirLockedError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds an exclusive lock on `workdir` (created if missing) inside the block.

    A second process that asks for the same workdir gets WorkdirLockedError naming the
    holder's process id. The lock is the kernel's (`flock`), so it is released when the holder
    exits, even by kill -9; the lock file staying behind does not block the next run.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirLockedError(
                f"workdir {workdir} is in use by process {holder}; wait for it to finish or "
                "use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def clear(workdir: str) -> None:
    """Deletes everything in `workdir` except the lock file (for --fresh)."""
    for name in os.listdir(workdir):
        if name == LOCK_FILE:
            continue
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
