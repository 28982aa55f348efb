"""Output helpers: atomic files (a result appears whole under its final name or not at all), PNG figures, and
per-site outputs joined along ``site``."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's directory; on success it replaces ``path`` atomically
    (``os.replace``), on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
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
    import datetime as dt
    import sys

    from kgml import __version__

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


def write_netcdf_atomic(ds, path: str | os.PathLike) -> Path:
    """Write an ``xr.Dataset`` to netCDF4 atomically (CF units, Conventions and history: `cf_encode`);
    refuses to overwrite one of the dataset's own inputs."""
    path = Path(path)
    sources = ds.encoding.get("source")
    if sources and Path(sources).resolve() == path.resolve():
        raise ValueError(f"refusing to overwrite the input file {path}; choose another output path")
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
    import xarray as xr

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
