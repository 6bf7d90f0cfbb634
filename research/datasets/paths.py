"""Where data folders given in configs resolve to."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_data_dir(path: str) -> str:
    """`path` as an absolute path; a relative one is taken relative to the repository root, so
    config defaults such as `../shared/data/planetoid` work from any working directory."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(REPO_ROOT, path))
