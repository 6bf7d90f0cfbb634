"""Errors that end a run with one line (printed by `experiments.app`) and a non-zero status."""


class RunError(RuntimeError):
    """A run cannot go on; the message is one line naming the cause and what to do."""


class RunMismatchError(RunError):
    """A workdir, checkpoint or cached result belongs to a run of a different config."""


class NonFiniteError(RunError):
    """Training produced NaN or infinity (loss or parameters); the last finite checkpoint stays."""


class TimeBudgetExceeded(RunError):
    """`train_loop`'s wall-clock deadline passed: the loop stopped before its next jitted call and
    saved the state reached as a checkpoint, so the same command again resumes there.

    Attributes: step (the step reached), state (the state reached, on the devices)."""

    def __init__(self, desc: str, step: int, state):
        super().__init__(
            f"{desc}: the time budget was spent at step {step}; training stopped there (the state "
            "is saved: a re-run resumes from it)"
        )
        self.step, self.state = step, state


class WorkdirLockedError(RunError):
    """Another live process is writing to the same workdir."""
