"""One workdir, one writer: an exclusive lock held for the life of a run.

In a multi-process run (`research.training.distributed`) all processes share the workdir, which
must therefore be on a file system every process sees (as orbax's checkpoints require): process
0 alone holds the lock and writes the shared files (`is_writer`), the others read (resume,
cached results) and wait for it where they must (`sync`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from research.training.distributed import is_multi_process
from research.training.errors import WorkdirLockedError

LOCK_FILE = ".lock"


def is_writer() -> bool:
    """True in the process that writes a workdir's shared files (metrics, results, config,
    checkpoint meta files): the only process of a single-process run, process 0 of a
    multi-process one. Starts no jax backend in a single-process run."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process of a multi-process run has called `sync(name)` (the same name
    in every process, in the same order); does nothing in a single-process run."""
    if is_multi_process():
        multihost_utils.sync_global_devices(name)


def _all_agree(ok: bool) -> bool:
    """Process 0's `ok`, in every process (a collective: every process must call it)."""
    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds an exclusive lock on `workdir` (created if missing) inside the block.

    A second process that asks for the same workdir gets WorkdirLockedError naming the
    holder's process id. The lock is the kernel's (`flock`), so it is released when the holder
    exits, even by kill -9; the lock file staying behind does not block the next run.

    In a multi-process run every process enters the block but only process 0 takes the lock
    (the processes of one run share the workdir); it tells the others whether it got it, so
    when it did not (or cannot create the workdir) every process raises, process 0 with the
    reason and the others with WorkdirLockedError pointing at it.
    """
    if not is_multi_process():
        with _flock(workdir):
            yield
        return
    with contextlib.ExitStack() as stack:
        error = None
        if is_writer():
            try:
                stack.enter_context(_flock(workdir))
            except (WorkdirLockedError, OSError) as err:
                error = err
        if not _all_agree(error is None):
            if error is not None:
                raise error
            raise WorkdirLockedError(
                f"process 0 of this run could not lock workdir {workdir} (its error says why)"
            )
        yield


@contextlib.contextmanager
def _flock(workdir: str) -> Iterator[None]:
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
