"""Output helpers: atomic files (a result appears whole under its final name or not at all, with the user's
umask), the output guard every writing command uses, PNG figures, and per-site outputs joined along ``site``."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import xarray as xr

from kgml import __version__

_UMASK_LOCK = threading.Lock()


class UnsafeOutputError(ValueError):
    """An output path that is (or would overwrite) one of the command's inputs or a run's own files."""


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it (0666/0777 less the umask):
    `tempfile` creates 0600 files and 0700 directories, which would hide results from the user's group."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the destination's directory; on success it is flushed to disk, given the
    user's umask and replaces ``path`` atomically (``os.replace``); on error it is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        apply_umask(tmp_path)
        if fsync:
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: kgml unit tokens that are not UDUNITS-2 → (UDUNITS-2 spelling, what the spelling leaves out).
_CF_TOKENS = {
    "gC": ("g", "grams of carbon"), "gC-1": ("g-1", "per gram of carbon"), "kgC": ("kg", "kilograms of carbon"),
    "mgC": ("mg", "milligrams of carbon"), "TgC": ("Tg", "teragrams of carbon"), "PgC": ("Pg", "petagrams of carbon"),
    "-": ("1", ""), "–": ("1", ""), "dimensionless": ("1", ""), "fraction": ("1", ""), "unitless": ("1", ""),
}
_CF_WHOLE = {"day of year": ("1", "day of the year, 1 January = 1"),
             "SoilGrids integer units": ("1", "SoilGrids integer units (scaled integers)")}
_WORDS = re.compile(r"\s*\(([A-Za-z][A-Za-z ,]*[A-Za-z])\)\s*$")  # a trailing plain-words remark: "(RMSE increase)"


def cf_units(units: str) -> tuple[str, str]:
    """The UDUNITS-2 / CF spelling of a kgml unit string and a note on what that spelling leaves out (``""``
    when nothing): ``"gC m-2 d-1"`` → ``("g m-2 d-1", "grams of carbon")``, ``"-"`` → ``("1", "")``,
    ``"gC MJ-1"`` → ``("g MJ-1", "grams of carbon")``, ``"gC m-2 d-1 per degC"`` → ``("g m-2 d-1 (degC)-1", …)``,
    ``"gC m-2 (m2 leaf m-2)-1"`` → ``("g m-2 (m2 m-2)-1", "… per unit leaf area")``; UDUNITS strings come back
    unchanged. Flux variables are carbon throughout kgml (`kgml.variables`), which the note records."""
    text = " ".join(str(units).split())
    if text in _CF_WHOLE:
        return _CF_WHOLE[text]
    notes = []
    m = _WORDS.search(text)
    if m and not any(ch.isdigit() for ch in m.group(1)):
        notes.append(m.group(1))
        text = text[: m.start()].strip()
    if " per " in text:
        num, _, den = text.partition(" per ")
        num_cf, num_note = cf_units(num)
        den_cf, den_note = cf_units(den)
        notes += [n for n in (num_note, den_note and f"denominator {den_note}") if n]
        return f"{num_cf} ({den_cf})-1", "; ".join(notes)
    if "leaf" in text.split():
        text = " ".join(t for t in text.split() if t != "leaf")
        notes.append("per unit leaf area")
    out = []
    for token in text.split():
        core, close, lead = token, "", ""
        while core.startswith("("):
            lead += "("
            core = core[1:]
        m2 = re.match(r"^(.*?)(\)(?:-?\d+)?)$", core)
        if m2 and m2.group(1):
            core, close = m2.group(1), m2.group(2)
        cf, note = _CF_TOKENS.get(core, (core, ""))
        if note and note not in notes:
            notes.insert(0, note)
        out.append(f"{lead}{cf}{close}")
    return " ".join(out) or "1", "; ".join(notes)


def cf_encode(ds, *, history: str | None = None):
    """A copy of ``ds`` ready to write as CF netCDF: every ``units`` attribute in UDUNITS-2 spelling
    (`cf_units`; what the spelling leaves out, e.g. "grams of carbon", goes to ``comment``), "1" on integer
    variables without units (counts, codes, year numbers), degrees on lat/lon without units,
    ``Conventions`` (CF-1.8 unless set) and a ``history`` line (UTC time, kgml version, command line)
    appended to the dataset's own history."""

    out = ds.copy()
    for name, units in (("lat", "degrees_north"), ("lon", "degrees_east")):
        if name in out.variables and "units" not in out[name].attrs and out[name].dtype.kind == "f":
            out[name].attrs = {**out[name].attrs, "units": units}
    for name in list(out.variables):
        attrs = out[name].attrs
        if "units" not in attrs and out[name].dtype.kind in "iu" and name not in out.dims:
            # integer counts, codes and calendar-year numbers are pure numbers: CF unit "1"
            out[name].attrs = {**attrs, "units": "1"}
            continue
        if "units" not in attrs or not isinstance(attrs["units"], str):
            continue
        new, note = cf_units(attrs["units"])
        if new != attrs["units"] or note:
            attrs = dict(attrs)
            attrs["units"] = new
            if note and note not in str(attrs.get("comment", "")):
                attrs["comment"] = f"{attrs['comment']}; {note}" if attrs.get("comment") else note
            out[name].attrs = attrs
    out.attrs.setdefault("Conventions", "CF-1.8")
    line = history or (f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} kgml {__version__}: "
                       + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    old = str(out.attrs.get("history", "")).strip()
    out.attrs["history"] = f"{old}\n{line}" if old else line
    return out



def write_csv_atomic(frame, path: str | os.PathLike, **kwargs) -> Path:
    """``DataFrame.to_csv`` atomically (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------
# The output guard
# ---------------------------------------------------------------------------------------------------------

#: Files a training run writes into its directory (besides ``checkpoint/``): a command that reads the run
#: must not overwrite them.
RUN_FILES = ("config.json", "splits.json", "predictions.nc", "metrics.json", "metrics.md")


def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The existing files that make up a run directory: its checkpoint (and any set being swapped in or
    out) and the files of `RUN_FILES`; a run directory that *is* a checkpoint gives all its files."""
    run_dir = Path(run_dir)
    out = [run_dir / n for n in RUN_FILES if (run_dir / n).is_file()]
    for ckpt in (run_dir / "checkpoint", run_dir / ".checkpoint.new", run_dir / ".checkpoint.old"):
        if ckpt.is_dir():
            out += [p for p in ckpt.iterdir() if p.is_file()]
    if (run_dir / "trainer.json").is_file() or (run_dir / "meta.json").is_file():
        out += [p for p in run_dir.iterdir() if p.is_file()]
    return out


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_existing(outputs: Iterable, force: bool) -> None:
    """The commands' ``--force`` rule: refuse (`FileExistsError`, one line) to replace any of ``outputs``
    that exists — a file, or a folder with anything in it — unless ``force``. Call it before any work, with
    every path the command will write (`guard_outputs` separately refuses inputs and run files, always)."""
    if force:
        return
    found = []
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        if path.is_file() or path.is_symlink() or (path.is_dir() and any(path.iterdir())):
            found.append(path)
    if found:
        more = f" (and {len(found) - 1} more of its outputs)" if len(found) > 1 else ""
        raise FileExistsError(f"{found[0]} exists{more}; pass --force to replace it")


def guard_outputs(outputs: Iterable, inputs: Iterable = (), runs: Iterable = ()) -> None:
    """Refuse (`UnsafeOutputError`, one line) any of ``outputs`` that resolves — through symbolic links
    (``realpath``) or as a hard link (same device and inode) — to one of ``inputs`` (files, or folders: then
    to anything inside them, existing or not, or to the folder itself) or to the files of the run directories ``runs``
    (`run_files`). Call it before reading anything, with every path the command will write."""
    files: dict[str, str] = {}  # realpath -> how the user named it
    folders: dict[str, str] = {}
    for p in inputs:
        if p is None:
            continue
        real = os.path.realpath(p)
        (folders if os.path.isdir(real) else files)[real] = f"the input {p}"
    for run in runs:
        if run is None:
            continue
        for f in run_files(run):
            files[os.path.realpath(f)] = f"{f}, a file of run {run}"
    ids = {}
    for real, label in files.items():
        ident = _identity(real)
        if ident is not None:
            ids[ident] = label
    for out in outputs:
        if out is None:
            continue
        real = os.path.realpath(out)
        ident = _identity(real)
        hit = files.get(real)
        if hit is None and ident is not None and ident in ids:
            hit = f"a hard link to {ids[ident]}"
        if hit is None:
            for folder, label in folders.items():
                if real == folder:
                    hit = f"{label} (a folder)"
                elif real.startswith(folder.rstrip(os.sep) + os.sep):
                    # new files count too: a folder reader would take them for inputs on the next run
                    hit = f"inside the input folder {label.removeprefix('the input ')}"
                if hit:
                    break
        if hit is None and ident is not None and folders and os.stat(real).st_nlink > 1:
            found = _hard_link_in(ident, folders)
            hit = f"a hard link to the input {found}" if found else None
        if hit is not None:
            raise UnsafeOutputError(f"refusing to write {out}: it is {hit}; choose another output path")


def _hard_link_in(ident: tuple[int, int], folders: dict[str, str]) -> str | None:
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if _identity(path) == ident:
                    return path
    return None


def write_netcdf_atomic(ds, path: str | os.PathLike) -> Path:
    """Write an ``xr.Dataset`` to netCDF4 atomically (CF units, Conventions and history: `cf_encode`);
    refuses to overwrite one of the dataset's own inputs."""
    path = Path(path)
    sources = ds.encoding.get("source")
    if sources:
        guard_outputs([path], [sources])
    ds = cf_encode(ds)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4")
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def concat_sites(parts):
    """Per-site datasets (e.g. the predictions of one model per region) joined along ``site``, with the
    dataset and variable attributes (units, long_name) of the first part."""
    if len(parts) == 1:
        return parts[0]
    out = xr.concat(parts, dim="site", data_vars="all", coords="minimal", compat="override", join="outer",
                    combine_attrs="drop")
    out.attrs.update(dict(parts[0].attrs))
    for v in out.data_vars:
        if v in parts[0]:
            out[v].attrs = dict(parts[0][v].attrs)
    return out


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only written to files); raises
    ImportError where matplotlib is not installed (the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png_atomic(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
