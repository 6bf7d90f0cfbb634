"""Orbax checkpointing with automatic resume, content checksums and recovery from a broken
latest checkpoint; in a single process or in every process of a multi-process run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from research.training import identity
from research.training.errors import NonFiniteError, RunMismatchError
from research.training.workdir import is_writer, sync


def tree_checksum(host_tree: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes (leaves as numpy arrays)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(host_tree):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def non_finite_leaves(host_tree: Any) -> list[str]:
    """Paths of the floating-point leaves that hold a NaN or an infinity."""
    return [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(host_tree)
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact) and not np.isfinite(leaf).all()
    ]


def host_copy(tree: Any) -> Any:
    """`tree` as numpy arrays, the same in every process: a replicated or fully addressable leaf
    is fetched (`jax.device_get`), a leaf split over several processes' devices is gathered
    (`process_allgather`, a collective: every process must call this on the same tree)."""

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not (
            leaf.is_fully_addressable or leaf.is_fully_replicated
        ):
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return jax.device_get(leaf)

    return jax.tree.map(fetch, tree)


def _shapes(tree: Any) -> dict[str, list]:
    """{leaf path: [shape, dtype name]} of a tree of arrays."""
    return {
        jax.tree_util.keystr(path): [list(np.shape(leaf)), np.dtype(leaf.dtype).name]
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


class Checkpointer:
    """Saves a pytree every `save_every` steps (and on demand), keeps the newest `keep`.

    Checkpoints live in `directory/<step>/`; beside each, `directory_meta/<step>.json` holds a
    sha256 of its contents, its leaf shapes and the run identity (`identity.current()`).
    `restore_latest` walks back from the newest step:

    - a checkpoint written under another config (identity or shapes differ) raises
      `RunMismatchError`: it is valid, just not this run's, so it is never moved;
    - a checkpoint that cannot be read, whose contents do not match its checksum, or that holds
      NaN / infinity is reported with its path and the reason, moved to
      `directory/../checkpoints_unreadable/`, and the previous one is used.

    `save` refuses (NonFiniteError) to write a state with NaN or infinity. Orbax writes into a
    temporary folder and renames it when complete, so a run killed mid-save leaves no
    half-written step folder behind.

    Multi-process runs: every process creates the Checkpointer and calls `restore_latest`,
    `save` and `close` with the same arguments in the same order (orbax's CheckpointManager
    synchronises them with barriers: each process writes its part of the arrays, under
    `<step>/default/ocdbt.process_<i>/`, and the primary host, process 0, writes the metadata
    and commits the step).
    Every process reads the meta files and computes the checksum on its own host copy (the
    loop's state is replicated, so each holds it all); process 0 alone writes the meta files
    and moves a broken checkpoint away while the others wait (`workdir.sync`). The directory
    must be on a file system every process sees.
    """

    def __init__(self, directory: str, *, save_every: int, keep: int = 3):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        self.meta_directory = self.directory + "_meta"
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=save_every,
                create=True,
                # orbax's defaults, spelled out: saves finish in a background thread (which
                # synchronises processes through the jax.distributed client), and process 0
                # is the primary host that creates folders, writes metadata and commits.
                enable_async_checkpointing=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0),
            ),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def _meta_path(self, step: int) -> str:
        return os.path.join(self.meta_directory, f"{step}.json")

    def _read_meta(self, step: int) -> dict[str, Any] | None:
        try:
            with open(self._meta_path(step)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def restore_latest(self, target: Any) -> tuple[Any, int | None]:
        """Returns (restored pytree, step) of the newest usable checkpoint, or (target, None).

        `target` gives the structure, shapes, dtypes and shardings to restore into. In a
        multi-process run every process returns the same step (checked: the processes stop
        with an error if their checkpoint folders disagree).
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in reversed(self.all_steps()):
            path = os.path.join(self.directory, str(step))
            meta = self._read_meta(step)
            if meta is not None:
                identity.check_stored(meta.get("run_config"), f"checkpoint {path}")
                if meta.get("shapes") not in (None, _shapes(target)):
                    raise RunMismatchError(
                        f"checkpoint {path} holds arrays of other shapes than this run's "
                        "(a different model or data size); use another --workdir, or --fresh to "
                        "delete the workdir's runs and start over"
                    )
            try:
                restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # noqa: BLE001 - any read failure means "unusable"
                first = str(err).splitlines()[0][:300] if str(err) else ""
                self._quarantine(step, f"unreadable ({type(err).__name__}: {first})")
                continue
            host = host_copy(restored)
            if meta is None:
                logging.warning("checkpoint %s has no checksum (written before checksums)", path)
            elif meta.get("sha256") != tree_checksum(host):
                self._quarantine(step, "its contents do not match the checksum written with it")
                continue
            bad = non_finite_leaves(host)
            if bad:
                self._quarantine(step, f"it holds NaN or infinity in {', '.join(bad[:3])}")
                continue
            logging.info("restored checkpoint %s", path)
            sync(f"Checkpointer.restore_latest {self.directory} step {step}")
            return restored, step
        sync(f"Checkpointer.restore_latest {self.directory} none")
        return target, None

    def save(self, step: int, tree: Any, *, force: bool = False) -> bool:
        """Saves `tree` at `step` if it is a save step (or `force`); returns whether it saved.

        Raises NonFiniteError (saving nothing) when a floating-point leaf is not finite. In a
        multi-process run every process calls it; process 0 writes the meta file.
        """
        if step in self._manager.all_steps():
            return False
        if not (force or step % self.save_every == 0):
            return False
        host = host_copy(tree)
        bad = non_finite_leaves(host)
        if bad:
            last = self.all_steps()
            kept = f"step {last[-1]} in {self.directory}" if last else "none"
            raise NonFiniteError(
                f"the state at step {step} holds NaN or infinity ({', '.join(bad[:3])}); "
                f"not saved; last finite checkpoint: {kept}"
            )
        meta = {"step": step, "sha256": tree_checksum(host), "shapes": _shapes(host)}
        meta["run_config"] = identity.current()
        if is_writer():
            os.makedirs(self.meta_directory, exist_ok=True)
            tmp = self._meta_path(step) + ".tmp"
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.replace(tmp, self._meta_path(step))  # before the checkpoint: never one without meta
        saved = self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._prune_meta()
        return saved

    def close(self) -> None:
        """Waits for pending (asynchronous) saves and releases the manager."""
        self._manager.wait_until_finished()
        self._prune_meta()
        self._manager.close()

    def _prune_meta(self) -> None:
        """Drops meta files of steps that orbax has deleted (keep N), except pending ones."""
        if not is_writer() or not os.path.isdir(self.meta_directory):
            return
        steps = self.all_steps()
        newest = max(steps, default=-1)
        for name in os.listdir(self.meta_directory):
            stem = name.removesuffix(".json")
            if stem.isdigit() and int(stem) not in steps and int(stem) < newest:
                os.remove(os.path.join(self.meta_directory, name))

    def _quarantine(self, step: int, reason: str) -> str:
        """Moves checkpoint `step` and its meta file to `checkpoints_unreadable/` (process 0;
        the others wait until every process has finished reading it, and until it is moved)."""
        src = os.path.join(self.directory, str(step))
        dst_dir = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable")
        dst = os.path.join(dst_dir, f"{step}-{int(time.time())}")
        barrier = f"Checkpointer.quarantine {self.directory} step {step}"
        sync(f"{barrier}: read")
        if is_writer():
            os.makedirs(dst_dir, exist_ok=True)
            if os.path.exists(src):
                shutil.move(src, dst)
            if os.path.exists(self._meta_path(step)):
                shutil.move(self._meta_path(step), dst + ".meta.json")
        else:
            dst = f"{dst_dir} (process 0 moves it)"
        sync(f"{barrier}: moved")
        self._manager.reload()
        logging.warning(
            "checkpoint %s is unusable: %s; moved it to %s and trying the previous checkpoint",
            src,
            reason,
            dst,
        )
        return dst


def delete_checkpoints(workdir: str) -> None:
    """Deletes a finished run's `checkpoints/` and their meta files (once its result is kept).
    In a multi-process run every process calls it: process 0 deletes once all have arrived, and
    all return once it has."""
    barrier = f"delete_checkpoints {os.path.abspath(workdir)}"
    sync(f"{barrier}: arrived")
    if is_writer():
        for name in ("checkpoints", "checkpoints_meta"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    sync(f"{barrier}: deleted")
