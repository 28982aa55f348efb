"""Data files recognised by their content, wherever they live and whatever they are called.

`recognise(path)` reads at most the first few kilobytes of a file (gzip decompressed when the file starts with
the gzip magic bytes, never because of its suffix) and names its format: the header columns of a table, the
first line of a DSSAT or APSIM text file, the ``KEY: value`` lines of COSORE metadata, or the variables and
dimensions of a netCDF file (recognised by the netCDF-3 / HDF5 magic bytes). `files_of(folder, fmt)` lists the
files of one format in a folder. The readers of `kgml.data` find their files with these two functions, so a
FLUXNET table called ``export.csv``, a COSORE flux table called ``flux.csv`` or a yield table without a suffix
are read like the originals; a file's *name* is used only for what the content cannot say (a tower's site code
in the FLUXNET / AmeriFlux / ICOS naming convention, a COSORE dataset's folder name, the crop of an agridat
``nass.<crop>`` table, the year and CO2 treatment of a SoyFACE table).

Formats (``fmt`` names): see `FORMATS`. Add one with `register_format`.
"""

from __future__ import annotations

import gzip
import io
import mimetypes
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from kgml.data.schema import DataValidationError, DataWarning
from kgml.variables import VARIABLES

__all__ = [
    "FORMATS",
    "Format",
    "Head",
    "files_of",
    "head",
    "is_gzip",
    "is_netcdf",
    "one_file",
    "open_bytes",
    "recognise",
    "register_format",
    "site_from_name",
]

GZIP_MAGIC = b"\x1f\x8b"
#: netCDF classic / 64-bit offset / CDF-5, and netCDF-4 (HDF5) signatures (Unidata netCDF format spec).
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
_HEAD_BYTES = 16384


def _magic(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether the file starts with the gzip magic bytes (RFC 1952), whatever its suffix."""
    return _magic(Path(path), 2) == GZIP_MAGIC


def is_netcdf(path: str | os.PathLike) -> bool:
    """Whether the file starts with a netCDF-3 or netCDF-4/HDF5 signature, whatever its suffix."""
    return _magic(Path(path)).startswith(NETCDF_MAGIC)


def open_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes. Raises OSError / EOFError /
    zlib.error as the underlying readers do (callers turn them into errors naming the file)."""
    path = Path(path)
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw


@dataclass(frozen=True)
class Head:
    """The start of a text file: its lines (decoded, BOM stripped) and the first non-comment, non-blank one
    split into fields (``sep`` is the delimiter that split it: comma, tab or whitespace)."""

    path: Path
    lines: tuple[str, ...]
    fields: tuple[str, ...]
    sep: str

    @property
    def names(self) -> set[str]:
        return {f.strip().strip('"') for f in self.fields}

    @property
    def lower(self) -> set[str]:
        return {n.lower() for n in self.names}

    def has(self, *names: str) -> bool:
        return set(names) <= self.names


def _split(line: str) -> tuple[tuple[str, ...], str]:
    for sep in (",", "\t"):
        if sep in line:
            return tuple(f.strip().strip('"') for f in line.split(sep)), sep
    return tuple(line.split()), " "


def _gunzip_start(raw: bytes) -> bytes:
    """Up to `_HEAD_BYTES` of a gzip stream's content: as much as decompresses before any damage (so a file
    damaged further in is still recognised, and its reader then names the damage)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    for i in range(0, len(raw), 512):
        try:
            out += inflater.decompress(raw[i:i + 512], _HEAD_BYTES - len(out))
        except zlib.error:
            break
        if len(out) >= _HEAD_BYTES or inflater.unconsumed_tail:
            break
    return out


def head(path: str | os.PathLike, *, comment: str = "#") -> Head | None:
    """The first lines of a text file (gzip or plain by magic bytes); None for binary or unreadable files."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_HEAD_BYTES if not _magic(path, 2) == GZIP_MAGIC else 1 << 20)
    except OSError:
        return None
    if raw[:2] == GZIP_MAGIC:
        raw = _gunzip_start(raw)
        if not raw:
            return None
    if b"\x00" in raw[:_HEAD_BYTES] or raw.startswith(NETCDF_MAGIC):
        return None
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = tuple(text.splitlines()[:60])
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith(comment)), "")
    fields, sep = _split(first)
    return Head(path, lines, fields, sep)


# --- signatures -------------------------------------------------------------------------------------------


#: Column spellings of a site table's site code, latitude and longitude (FLUXNET, ICOS, AGDS; lower case).
SITE_COLUMNS = ("site", "site_id", "siteid", "sitecode", "site_code", "fluxnet_id", "id")
LAT_COLUMNS = ("lat", "latitude", "location_lat", "lat_deg")
LON_COLUMNS = ("lon", "long", "longitude", "location_long", "location_lon", "lon_deg")
#: The columns a BioCro hourly weather table must have (lower case).
BIOCRO_HOURLY_COLUMNS = ("year", "doy", "hour", "precip", "rh", "solar", "temp")


def _fluxnet_columns() -> set[str]:
    return {c for v in VARIABLES.values() for c in v.fluxnet}


def _is_fluxnet(h: Head) -> bool:
    """FLUXNET2015 / ONEFlux / ICOS / AmeriFlux FLUXNET tables: first column TIMESTAMP or TIMESTAMP_START and at
    least one standard FLUXNET variable column (AmeriFlux BASE files, with ``#`` lines first, are `ameriflux_base`)."""
    if not h.fields or not h.fields[0].startswith("TIMESTAMP") or h.lines[0].startswith("#"):
        return False
    return bool(_fluxnet_columns() & h.names)


def _is_ameriflux_base(h: Head) -> bool:
    return bool(h.lines) and h.lines[0].startswith("#") and bool(h.fields) and h.fields[0] == "TIMESTAMP_START"


def _is_qca(h: Head) -> bool:
    """ONEFlux qca_ustar: ``key,value`` header lines (site, year, timezone, timeres) then TIMESTAMP_START."""
    keys = {ln.split(",", 1)[0].strip() for ln in h.lines}
    return {"site", "timezone"} <= keys and any(ln.startswith("TIMESTAMP_START") for ln in h.lines)


def _is_reddyproc(h: Head) -> bool:
    if h.sep == "\t":
        return h.has("Year", "DoY", "Hour", "NEE")
    return h.has("DateTime", "NEE") and bool({"Ustar", "Rg", "Tair"} & h.names)


def _is_bigleaf(h: Head) -> bool:
    return h.fields[:4] == ("year", "month", "doy", "hour")


def _csr_keys(h: Head) -> set[str]:
    return {m.group(1) for ln in h.lines if (m := re.match(r"^(CSR_[A-Z_]+)\s*:", ln))}


def _is_cosore_description(h: Head) -> bool:
    return len(_csr_keys(h) & {"CSR_SITE_NAME", "CSR_LONGITUDE", "CSR_LATITUDE", "CSR_TIMEZONE", "CSR_IGBP"}) >= 2


def _is_cosore_ports(h: Head) -> bool:
    return h.has("CSR_PORT", "CSR_MSMT_VAR")


def _is_cosore_data(h: Head) -> bool:
    return h.has("CSR_PORT", "CSR_TIMESTAMP_BEGIN") and any(n.startswith("CSR_FLUX") for n in h.names)


def _is_cosore_index(h: Head) -> bool:
    return h.has("dataset", "igbp", "csr_timezone")


def _is_srdb(h: Head) -> bool:
    return "Record_number" in h.names and len({"Study_number", "Study_midyear", "Rs_annual", "Rh_annual"} & h.names) >= 2


def _is_nass_state(h: Head) -> bool:
    return h.sep == "\t" and h.has("year", "state") and bool({"acres", "yield"} & h.names) and len(h.names) <= 5


def _is_thompson(h: Head) -> bool:
    return h.has("state", "year", "corn", "soy") and any(re.fullmatch(r"rain\d", n) for n in h.names)


def _is_wallace(h: Head) -> bool:
    return h.has("county", "fips", "lat", "long", "yield", "corn")


def _is_you2017_yield(h: Head) -> bool:
    return h.has("year", "state_fips", "county_fips") and any("yield" in n.lower() for n in h.names)


def _is_county_locations(h: Head) -> bool:
    return h.has("state_fips", "county_fips", "lon", "lat") and "year" not in h.names


def _is_khaki(h: Head) -> bool:
    return h.has("loc_id", "year") and sum(re.fullmatch(r"W_\d+_\d+", n) is not None for n in h.names) >= 10


def _is_nldas_weather(h: Head) -> bool:
    return h.has("fips", "Year", "Day") and len({"Tair", "RH", "Wind", "Precipitation", "Radiation"} & h.names) >= 2


def _is_slope_gpp(h: Head) -> bool:
    return h.has("fips", "crop", "year", "doy") and len(h.names) <= 6


def _is_soyface(h: Head) -> bool:
    return "DOY" in h.names and len({"Leaf", "Stem", "Rep", "Seed", "Litter"} & {n.partition("_")[0] for n in h.names}) >= 2


def _is_biocro_hourly(h: Head) -> bool:
    return h.sep == "," and {"year", "doy", "hour"} <= h.lower and len(set(BIOCRO_HOURLY_COLUMNS[3:]) & h.lower) >= 2


def _is_apsim_met(h: Head) -> bool:
    body = [ln.split("!", 1)[0].strip().lower() for ln in h.lines]
    columns = next((ln.split() for ln in body if ln.startswith("year") and "day" in ln.split()), None)
    return columns is not None and len({"radn", "maxt", "mint", "rain"} & set(columns)) >= 2


def _first_line(h: Head) -> str:
    return next((ln.strip() for ln in h.lines if ln.strip()), "")


def _is_dssat_weather(h: Head) -> bool:
    return _first_line(h).upper().startswith("*WEATHER") or (
        any(ln.startswith("@ INSI") for ln in h.lines) and any(ln.startswith("@DATE") for ln in h.lines))


def _is_dssat_experiment(h: Head) -> bool:
    return _first_line(h).upper().startswith("*EXP.DETAILS")


def _is_dssat_observed(h: Head) -> bool:
    line = _first_line(h).upper()  # "*EXP.DATA (A): IUAM9701SB", "*EXP. DATA (T): ...", or just "*EXP: CLMO8501SB"
    return line.startswith("*EXP") and not line.startswith("*EXP.DETAILS") and ":" in line


def _is_dssat_soil(h: Head) -> bool:
    return _first_line(h).upper().startswith("*SOILS")


def _is_site_table(h: Head) -> bool:
    return bool(h.lower & set(SITE_COLUMNS)) and bool(h.lower & set(LAT_COLUMNS)) and bool(
        h.lower & set(LON_COLUMNS)) and not (h.lower & {"year", "timestamp", "doy"})


# netCDF formats: decided on the variables and dimensions (opened lazily, nothing loaded).


def _netcdf_contents(path: Path) -> tuple[set[str], dict[str, int], dict] | None:
    if not is_netcdf(path):
        return None
    try:
        with xr.open_dataset(path, decode_times=False) as ds:
            return set(map(str, ds.data_vars)), {str(k): int(v) for k, v in ds.sizes.items()}, dict(ds.attrs)
    except Exception:  # an unreadable netCDF is no format; its reader names the problem
        return (set(), {}, {})


@dataclass(frozen=True)
class Format:
    """``test(Head) -> bool`` for text formats; ``binary=True`` formats test the netCDF contents instead."""

    name: str
    description: str
    test: Callable
    binary: bool = False


def _grid(contents) -> bool:
    _, sizes, _ = contents
    dims = set(sizes)
    return bool({"lat", "latitude", "y"} & dims) and bool({"lon", "longitude", "x"} & dims)


def _reddyproc_nc(contents) -> bool:
    """One tower's half-hourly series (NEE, Rg, Tair, ...) stored on a 1 x 1 grid or none (REddyProc examples)."""
    names, sizes, attrs = contents
    cells = [n for d, n in sizes.items() if d in ("lat", "latitude", "lon", "longitude", "x", "y")]
    return "NEE" in names and ("Site_ID" in attrs or all(n == 1 for n in cells))


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format, *, first: bool = False) -> None:
    """Add a format; formats are tried in order and the first whose test passes names the file."""
    items = list(FORMATS.items())
    items = [(fmt.name, fmt), *items] if first else [*items, (fmt.name, fmt)]
    FORMATS.clear()
    FORMATS.update(items)


for _fmt in (
    Format("fluxnet", "FLUXNET2015 / ONEFlux / ICOS / AmeriFlux-FLUXNET table", _is_fluxnet),
    Format("ameriflux_base", "AmeriFlux BASE table", _is_ameriflux_base),
    Format("qca_ustar", "ONEFlux qca_ustar measured NEE", _is_qca),
    Format("reddyproc", "REddyProc input table", _is_reddyproc),
    Format("bigleaf", "bigleaf example table", _is_bigleaf),
    Format("cosore_data", "COSORE flux table", _is_cosore_data),
    Format("cosore_ports", "COSORE PORTS table", _is_cosore_ports),
    Format("cosore_description", "COSORE DESCRIPTION metadata", _is_cosore_description),
    Format("cosore_index", "COSORE dataset index", _is_cosore_index),
    Format("srdb", "SRDB data table", _is_srdb),
    Format("nass_state", "agridat NASS state yields", _is_nass_state),
    Format("thompson", "agridat Thompson corn/soy yields and weather", _is_thompson),
    Format("wallace", "agridat Wallace Iowa counties", _is_wallace),
    Format("you2017_yield", "NASS county yields (You et al. 2017)", _is_you2017_yield),
    Format("khaki", "county corn yield + weekly Daymet (Khaki et al. 2020)", _is_khaki),
    Format("nldas_weather", "KGML-DA county NLDAS-2 weather", _is_nldas_weather),
    Format("slope_gpp", "KGML-DA county SLOPE GPP", _is_slope_gpp),
    Format("soyface", "SoyFACE biomass table", _is_soyface),
    Format("biocro_hourly", "BioCro hourly weather", _is_biocro_hourly),
    Format("apsim_met", "APSIM .met daily weather", _is_apsim_met),
    Format("dssat_weather", "DSSAT weather", _is_dssat_weather),
    Format("dssat_experiment", "DSSAT experiment (X file)", _is_dssat_experiment),
    Format("dssat_observed", "DSSAT observed data (A/T file)", _is_dssat_observed),
    Format("dssat_soil", "DSSAT soil profiles", _is_dssat_soil),
    Format("county_locations", "county centroid table", _is_county_locations),
    Format("site_table", "site table (site, lat, lon, ...)", _is_site_table),
    Format("reddyproc_nc", "REddyProc example netCDF", _reddyproc_nc, binary=True),
    Format("netcdf_grid", "gridded netCDF", _grid, binary=True),
):
    register_format(_fmt)


def recognise(path: str | os.PathLike) -> str | None:
    """The format of ``path`` by content (a key of `FORMATS`), or None (not a file, unreadable, unknown).
    Remembered per file while its size, modification time and inode are unchanged."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, tuple(FORMATS))
    if key not in _SEEN:
        if len(_SEEN) > 100_000:
            _SEEN.clear()
        _SEEN[key] = _recognise(path)
    return _SEEN[key]


_SEEN: dict[tuple, str | None] = {}


def _recognise(path: Path) -> str | None:
    contents = _netcdf_contents(path)
    if contents is not None:
        return next((f.name for f in FORMATS.values() if f.binary and f.test(contents)), None)
    h = head(path)
    if h is None:
        return None
    for fmt in FORMATS.values():
        if not fmt.binary:
            try:
                if fmt.test(h):
                    return fmt.name
            except (IndexError, ValueError):
                continue
    return None


def files_of(folder: str | os.PathLike, *formats: str, recursive: bool = False,
             named: re.Pattern | None = None) -> list[Path]:
    """The files of ``folder`` (and, with ``recursive``, its sub-folders) whose content is one of ``formats``;
    with ``named`` (a pattern of the format's naming convention), also the files so named whose content is not
    recognised at all, so that a damaged file is read and reported by its reader instead of passed over. A
    ``.gz`` file whose content is neither gzip nor any known format (damaged in its first bytes) is skipped with
    a `DataWarning` naming it, never in silence."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; known: {sorted(FORMATS)}")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in candidates:
        if p.is_file() and not p.name.startswith("."):
            kind = recognise(p)
            if kind in formats or (kind is None and named is not None and named.search(p.name)):
                out.append(p)
            elif kind is None and mimetypes.guess_type(p.name)[1] == "gzip" and not is_gzip(p):
                warnings.warn(f"{p}: named .gz but not gzip and no known format (damaged in its first bytes?); "
                              "skipped", DataWarning, stacklevel=2)
    return sorted(out)


def one_file(folder: str | os.PathLike, fmt: str, what: str) -> Path:
    """The one file of ``folder`` in format ``fmt``; a `DataValidationError` naming the folder otherwise."""
    found = files_of(folder, fmt)
    if len(found) != 1:
        names = [p.name for p in found]
        raise DataValidationError(folder, None, f"expected one {what} ({FORMATS[fmt].description}, recognised by "
                                  f"its content), found {names or 'none'}")
    return found[0]


#: Site codes in the FLUXNET / AmeriFlux / ICOS naming convention (``CC-Xxx``: country, three characters).
_SITE_CODE = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}-[A-Za-z0-9]{3})(?![A-Za-z0-9])")


def site_from_name(path: str | os.PathLike) -> str | None:
    """The site code of a file named in the FLUXNET / AmeriFlux / ICOS convention (``FLX_US-Ne1_…``,
    ``AMF_US-Ne1_BASE_…``, ``US-Ne1_qca_ustar_2018``, ``CH-Dav_daily``), or None when the name holds none."""
    match = _SITE_CODE.search(Path(path).name)
    return match.group(1) if match else None


def text_of(path: str | os.PathLike) -> io.StringIO:
    """The decoded text of a (possibly gzipped) file as a stream."""
    return io.StringIO(open_bytes(path).decode("utf-8-sig", errors="replace"))
