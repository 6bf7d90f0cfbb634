"""Errors that end a run with one line (printed by `experiments.app`) and a non-zero status."""


class RunError(RuntimeError):
    """A run cannot go on; the message is one line naming the cause and what to do."""


class RunMismatchError(RunError):
    """A workdir, checkpoint or cached result belongs to a run of a different config."""


class NonFiniteError(RunError):
    """Training produced NaN or infinity (loss or parameters); the last finite checkpoint stays."""


class WorkdirLockedError(RunError):
    """Another live process is writing to the same workdir."""
