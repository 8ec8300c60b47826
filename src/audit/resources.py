"""Where the shipped templates and baselines live.

In a wheel they are packaged under ``audit/_data``; in a source checkout
(editable install, tests, CI) they are the repository's top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_REPOSITORY = _PACKAGE.parent.parent


def resource_dir(name: str) -> Path:
    """``templates`` or ``baselines``, packaged or from the checkout."""
    for candidate in (_PACKAGE / "_data" / name, _REPOSITORY / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped folder '{name}' not found (looked in {_PACKAGE / '_data'} and {_REPOSITORY})")
