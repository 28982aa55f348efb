"""Progress bars and notes for whatever a person waits for: one switch (`set_quiet`, the commands' ``--quiet``)
silences both. Errors are never routed through here, so ``--quiet`` never hides one.

Bars go to stderr (tqdm); notes are one line on stderr. dask computations get `dask_progress`, which shows
dask's own progress bar on the local schedulers once a computation has run for a second.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

_QUIET = False
_ERRORS = None  # where errors go while quiet: the stderr of before `quiet_output`

#: The note printed before the first training step: JAX compiles the step then, which takes from seconds
#: to a minute and would otherwise look like a hang (or, inside a bar, like an ETA of hours).
COMPILING_NOTE = "compiling the model (the first step traces and compiles it; seconds to a minute) …"


def set_quiet(quiet: bool = True) -> None:
    """Silence (or restore) every progress bar and note of this process."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    """Whether `set_quiet` silenced progress and notes."""
    return _QUIET


def error_stream():
    """The stream for error messages: stderr, also under `quiet_output` (which silences everything else)."""
    return _ERRORS if _ERRORS is not None else sys.stderr


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Silence progress bars, notes and every other output on stdout and stderr inside (the commands'
    ``--quiet``); errors still reach stderr through `error_stream`, and exceptions leave the block (and are
    reported) as usual."""
    import os

    global _ERRORS
    saved = _QUIET, _ERRORS
    _ERRORS = sys.stderr
    set_quiet(True)
    try:
        with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            yield
    finally:
        set_quiet(saved[0])
        _ERRORS = saved[1]


def note(message: str) -> None:
    """One line on stderr for a person watching (``--quiet`` silences it). Not for errors."""
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


def bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any):
    """A tqdm progress bar on stderr (`tqdm.auto.tqdm` arguments), off when quiet or ``disable``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable or _QUIET, **kwargs)


@contextlib.contextmanager
def dask_progress(scheduler: Any = None, *, minimum: float = 1.0) -> Iterator[None]:
    """dask's progress bar around the computations inside, on stderr, for the local schedulers (None,
    ``"threads"``, ``"sync"``, …); nothing when quiet. A distributed scheduler reports progress on its own
    dashboard (`distributed.progress` needs futures), so it gets no bar here."""
    local = scheduler is None or scheduler in ("threads", "sync", "synchronous", "processes", "single-threaded")
    if _QUIET or not local:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=minimum, dt=0.5, out=sys.stderr):
        yield
