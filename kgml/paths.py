"""Where kgml finds the real third-party data: an explicit path, ``KGML_DATA``, or ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "KGML_DATA"
_REPO_ROOT = Path(__file__).resolve().parent.parent


class DataNotFoundError(FileNotFoundError):
    """The data directory (or a dataset inside it) does not exist."""


def _candidates() -> list[Path]:
    return [Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory, or None when none is configured or found.

    Order: ``explicit`` (e.g. ``--data-dir``), the ``KGML_DATA`` environment variable, then ``../shared/data``
    relative to the working directory or to the repository. An explicit or environment path that does not
    exist is an error, never silently replaced by another.
    """
    for given, origin in ((explicit, "--data-dir"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if given:
            path = Path(given).expanduser().resolve()
            if not path.is_dir():
                raise DataNotFoundError(f"data directory {path} (from {origin}) does not exist")
            return path
    for path in _candidates():
        if path.is_dir():
            return path.resolve()
    return None


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Like `find_data_dir` but raises a clear error when no data directory is found."""
    path = find_data_dir(explicit)
    if path is None:
        raise DataNotFoundError(
            f"no data directory: pass --data-dir DIR, set {ENV_VAR}=DIR, or place the data at ../shared/data"
        )
    return path


def dataset_path(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of one dataset folder (e.g. ``"apsimx_ames_ia_daily_weather"``) under the data directory."""
    path = data_dir(explicit) / name
    if not path.exists():
        raise DataNotFoundError(f"dataset {name!r} not found under {path.parent}")
    return path
