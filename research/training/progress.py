"""Progress bars for long loops: tqdm with loss and steps/s, silent when stdout is no terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, *, desc: str, initial: int = 0, unit: str = "step") -> tqdm:
    """A tqdm bar over `total` units (shows rate in `unit`/s); disabled unless stdout is a TTY.

    Update with `bar.update(n)` and show the loss with `bar.set_postfix(loss=...)`.
    """
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stdout,
        dynamic_ncols=True,
        disable=not sys.stdout.isatty(),
    )
