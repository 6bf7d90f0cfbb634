"""Orbax checkpointing with automatic resume and recovery from a broken latest checkpoint."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """Saves a pytree every `save_every` steps (and on demand), keeps the newest `keep`.

    Checkpoints live in `directory/<step>/`. `restore_latest` walks back from the newest step:
    a checkpoint that cannot be read (corrupted or partially written files) is reported with
    its path and the error, moved to `directory/../checkpoints_unreadable/`, and the previous
    one is used. Orbax writes into a temporary folder and renames it when complete, so a run
    killed mid-save leaves no half-written step folder behind.
    """

    def __init__(self, directory: str, *, save_every: int, keep: int = 3):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=save_every, create=True
            ),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, target: Any) -> tuple[Any, int | None]:
        """Returns (restored pytree, step) of the newest readable checkpoint, or (target, None).

        `target` gives the structure, shapes, dtypes and shardings to restore into.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in reversed(self.all_steps()):
            try:
                restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # noqa: BLE001 - any read failure means "unusable"
                path = os.path.join(self.directory, str(step))
                moved = self._quarantine(step)
                logging.warning(
                    "checkpoint %s is unreadable (%s: %s); moved it to %s and trying the "
                    "previous checkpoint",
                    path,
                    type(err).__name__,
                    str(err).splitlines()[0][:300] if str(err) else "",
                    moved,
                )
                continue
            logging.info("restored checkpoint %s", os.path.join(self.directory, str(step)))
            return restored, step
        return target, None

    def save(self, step: int, tree: Any, *, force: bool = False) -> bool:
        """Saves `tree` at `step` if it is a save step (or `force`); returns whether it saved."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(tree), force=force)

    def close(self) -> None:
        """Waits for pending (asynchronous) saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def _quarantine(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        dst_dir = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable")
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, f"{step}-{int(time.time())}")
        if os.path.exists(src):
            shutil.move(src, dst)
        self._manager.reload()
        return dst
