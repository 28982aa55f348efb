"""``kgml gapfill FILE --out OUT``: gap-fill a flux column of a tower file and write the same format back.

Reads a FLUXNET/ONEFlux/AmeriFlux-format CSV (``TIMESTAMP`` or ``TIMESTAMP_START``; .csv or .csv.gz; key,value
metadata lines before the header are kept), a REddyProc input table (tab-separated ``Year DoY Hour ...``, a
units line) or a ``DateTime`` CSV. Every original line, field and line ending is copied unchanged; the fill
comes in added columns: ``<COL>_F_MDS`` (filled series), ``_QC`` (0 original, 1/2/3 = class A/B/C), ``_SD``
(std of the values averaged), ``_N``, ``_METHOD`` and ``_WINDOW`` (days) — REddyProc's ``NEE_f``, ``_fqc``,
``_fsd``, ``_fnum``, ``_fmeth``, ``_fwin`` in a REddyProc table. Missing = -9999 (or NA where the file uses NA).

``--method gbm|rf``: ``<COL>_F_GBM`` (or ``_RF``), ``_QC`` (0 original, 1 filled, 2 filled with a driver missing),
``_SD`` (calibrated 1 σ). ``--method hybrid`` (`kgml.fluxsite.fluxhybrid`: NEE = Rb_NN·Q10^((TA−15)/10) − LUE_NN·SW_IN, a
deep ensemble trained on the column's own measured values; needs TA): ``<COL>_F_HYB``, ``_QC`` (0 original,
1 filled, 2 filled where a driver was interpolated), ``_SD`` (calibrated 1 σ) and the partitioning of the same
model, ``<COL>_F_HYB_GPP`` and ``<COL>_F_HYB_RECO`` (the column's units; REddyProc tables: ``NEE_hybrid_f``,
``_fqc``, ``_fsd``, ``_GPP``, ``_Reco``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from kgml.progress import error_stream

_FLUX_CANDIDATES = ("NEE_VUT_REF", "NEE", "NEE_PI", "FC", "NEE_CUT_REF", "NEE_VUT_USTAR50")
_SW_CANDIDATES = ("SW_IN_F", "SW_IN", "SW_IN_F_MDS", "SW_IN_PI_F", "Rg")
_TA_CANDIDATES = ("TA_F", "TA", "TA_F_MDS", "TA_PI_F", "Tair")
_VPD_CANDIDATES = ("VPD_F", "VPD", "VPD_F_MDS", "VPD_PI", "VPD_PI_F")
_RH_CANDIDATES = ("RH", "rH", "RH_F", "RH_PI_F")
_SWC_CANDIDATES = ("SWC_F_MDS_1", "SWC_1", "SWC", "SWC_PI_F", "SWC_1_1_1")
_METHODS = ("mds", "gbm", "rf", "hybrid")
_MISSING = -9999.0


def register(subparsers) -> None:
    from kgml.cliopts import ListAction, add_force

    p = subparsers.add_parser(
        "gapfill",
        help="gap-fill NEE (or another flux) of a FLUXNET / REddyProc file by MDS, ML or the flux hybrid; same format out, added columns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="input file (FLUXNET-format CSV[.gz], REddyProc table, or DateTime CSV)")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (never the input; .gz compresses)")
    p.add_argument("--flux", action=ListAction, default=None, metavar="COLUMN",
                   help=f"columns to fill, commas or spaces (default: the first of {', '.join(_FLUX_CANDIDATES)})")
    p.add_argument("--method", choices=_METHODS, default="mds",
                   help="mds: marginal distribution sampling (default); gbm / rf: ML filler (needs scikit-learn); "
                        "hybrid: the flux hybrid (NEE = Reco(TA) - LUE x SW_IN), also writes its GPP and Reco")
    p.add_argument("--sw-in", default=None, metavar="COLUMN", help="shortwave radiation column (W m-2)")
    p.add_argument("--ta", default=None, metavar="COLUMN", help="air temperature column (°C)")
    p.add_argument("--vpd", default=None, metavar="COLUMN", help="vapour pressure deficit column (hPa)")
    p.add_argument("--max-flag", type=int, default=0,
                   help="sub-daily <COL>_QC flags above this count as gaps (default 0: fill all but measured)")
    p.add_argument("--min-fraction", type=float, default=0.5,
                   help="daily <COL>_QC fractions below this count as gaps (default 0.5)")
    p.add_argument("--ignore-qc", action="store_true", help="only -9999/NA values are gaps")
    p.add_argument("--gaps-only", action="store_true",
                   help="estimate gaps only (default also estimates measured steps, for the _SD uncertainty)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the gbm / rf / hybrid fillers (MDS is deterministic; default 0)")
    add_force(p)
    p.set_defaults(handler=_run)


def _run(args) -> int:
    from kgml.data.schema import DataValidationError

    try:
        report = gapfill_file(
            args.file, args.out, flux=args.flux, method=args.method, sw_in=args.sw_in, tair=args.ta, vpd=args.vpd,
            max_flag=args.max_flag, min_fraction=args.min_fraction, use_qc=not args.ignore_qc,
            fill_all=not args.gaps_only, overwrite=args.force, progress=True, seed=args.seed,
        )
    except (DataValidationError, FileExistsError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"kgml gapfill: error: {err}", file=error_stream())
        return 2
    for line in report.summary():
        print(line)
    return 0


@dataclass
class _Table:
    """A text table kept line by line so that the output can copy every original byte."""

    path: Path
    kind: str  # "fluxnet" | "reddyproc" | "datetime"
    lines: list[str]
    newline: str
    bom: bool
    header_index: int
    data_start: int
    sep: str
    columns: list[str]
    rows: list[int] = field(default_factory=list)  # line indices of data rows
    missing_token: str = "-9999"


@dataclass
class GapfillReport:
    """What `gapfill_file` did, per filled column."""

    path: Path
    out: Path
    kind: str
    steps_per_day: int
    columns: dict[str, dict[str, int]]
    added: list[str]
    notes: list[str]

    def summary(self) -> list[str]:
        lines = [f"{self.path} ({self.kind}, {self.steps_per_day} steps per day) -> {self.out}"]
        for col, counts in self.columns.items():
            lines.append(
                f"  {col}: {counts['gaps']} gaps, filled {counts['filled']} "
                f"(A {counts['A']}, B {counts['B']}, C {counts['C']}), unfilled {counts['unfilled']}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  added columns: {', '.join(self.added)}")
        return lines


def _read_table(path: Path) -> _Table:
    from kgml.data.schema import DataValidationError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # gzip by its magic bytes, not its name
    except (OSError, EOFError, zlib.error) as err:
        raise DataValidationError(path, None, f"cannot read file: {err}") from err
    text = raw.decode("utf-8", errors="strict") if raw else ""
    bom = text.startswith("\ufeff")
    text = text.removeprefix("\ufeff")
    newline = "\r\n" if "\r\n" in text else "\r" if "\r" in text else "\n"
    lines = text.split(newline)
    if not text.strip():
        raise DataValidationError(path, None, "file is empty")
    first = lines[0]
    if "\t" in first and {"Year", "DoY", "Hour"} <= set(first.split("\t")):
        kind, header_index, sep, data_start = "reddyproc", 0, "\t", 2
    else:
        header_index = next(
            (i for i, ln in enumerate(lines[:200]) if ln.split(",")[0].strip().strip('"') in ("TIMESTAMP", "TIMESTAMP_START", "DateTime")),
            None,
        )
        if header_index is None:
            raise DataValidationError(
                path, "TIMESTAMP", "no header line starting with TIMESTAMP, TIMESTAMP_START or DateTime, and not a "
                "REddyProc table (tab-separated Year, DoY, Hour): unknown format",
            )
        sep, data_start = ",", header_index + 1
        kind = "datetime" if lines[header_index].split(",")[0].strip().strip('"') == "DateTime" else "fluxnet"
    columns = [c.strip().strip('"') for c in lines[header_index].split(sep)]
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DataValidationError(path, dup[0], f"column appears more than once in the header: {dup}")
    rows = [i for i in range(data_start, len(lines)) if lines[i].strip()]
    if not rows:
        raise DataValidationError(path, None, "no data rows after the header")
    for i in rows:
        if lines[i].count(sep) != len(columns) - 1:
            raise DataValidationError(
                path, None, f"line {i + 1} has {lines[i].count(sep) + 1} fields but the header has {len(columns)} "
                "(truncated or broken row)",
            )
    return _Table(path, kind, lines, newline, bom, header_index, data_start, sep, columns, rows)


def _frame(table: _Table):
    import numpy as np
    import pandas as pd

    from kgml.data.schema import DataValidationError

    body = "\n".join([table.sep.join(table.columns), *(table.lines[i] for i in table.rows)])
    text_cols = [c for c in ("TIMESTAMP", "TIMESTAMP_START", "TIMESTAMP_END", "DateTime") if c in table.columns]
    frame = pd.read_csv(
        io.StringIO(body), sep=table.sep, dtype=dict.fromkeys(text_cols, str), na_values=["NA", "NaN", "nan", ""],
        keep_default_na=False, skipinitialspace=True,
    )
    for col in frame.columns:
        if col in text_cols:
            continue
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            numeric = pd.to_numeric(series, errors="coerce")
            bad = numeric.isna() & series.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataValidationError(table.path, col, f"non-numeric value {series.iloc[i]!r} at line {table.rows[i] + 1}")
            series = numeric
        frame[col] = series.astype(float).where(series != _MISSING)
    uses_na = any(",NA" in table.lines[i] or "\tNA" in table.lines[i] or table.lines[i].startswith("NA") for i in table.rows[:2000])
    table.missing_token = "NA" if uses_na else "-9999"
    return frame


def _times(table: _Table, frame):
    """Period-start timestamps (datetime64[ns]) and the name of the column they come from."""
    import numpy as np
    import pandas as pd

    from kgml.data.schema import DataValidationError

    formats = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d", 10: "%Y-%m-%d", 12: "%Y%m%d%H%M", 16: "%Y-%m-%d %H:%M", 19: "%Y-%m-%d %H:%M:%S"}

    def parse(col: str) -> np.ndarray:
        text = frame[col].astype(str).str.strip()
        lengths = sorted(set(text.str.len()))
        if len(lengths) != 1 or lengths[0] not in formats:
            raise DataValidationError(table.path, col, f"unrecognised or mixed timestamp formats (lengths {lengths[:4]})")
        t = pd.to_datetime(text, format=formats[lengths[0]], errors="coerce")
        if t.isna().any():
            i = int(np.flatnonzero(t.isna().to_numpy())[0])
            raise DataValidationError(table.path, col, f"invalid timestamp {text.iloc[i]!r} at line {table.rows[i] + 1}")
        return t.to_numpy(dtype="datetime64[ns]")

    if table.kind == "reddyproc":
        for col in ("Year", "DoY", "Hour"):
            if frame[col].isna().any():
                i = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                raise DataValidationError(table.path, col, f"missing time field at line {table.rows[i] + 1}")
        year = pd.to_datetime(frame["Year"].astype(int).astype(str), format="%Y").to_numpy(dtype="datetime64[ns]")
        ends = (
            year + ((frame["DoY"].to_numpy() - 1) * 86400e9).astype("timedelta64[ns]")
            + (frame["Hour"].to_numpy() * 3600e9).round().astype("timedelta64[ns]")
        )
        column, is_end = "Year/DoY/Hour", True
    elif table.kind == "datetime":
        ends, column, is_end = parse("DateTime"), "DateTime", True
    elif "TIMESTAMP_START" in frame:
        ends, column, is_end = parse("TIMESTAMP_START"), "TIMESTAMP_START", False
    else:
        ends, column, is_end = parse("TIMESTAMP"), "TIMESTAMP", False
    if ends.size < 2:
        raise DataValidationError(table.path, column, "need at least two time steps")
    steps = np.diff(ends)
    zero = np.timedelta64(0, "ns")
    if np.any(steps <= zero):
        i = int(np.flatnonzero(steps <= zero)[0]) + 1
        what = "duplicate timestamp" if steps[i - 1] == zero else "timestamps not monotonic"
        raise DataValidationError(
            table.path, column,
            f"{what}: {ends[i]} at line {table.rows[i] + 1} follows {ends[i - 1]} at line {table.rows[i - 1] + 1}",
        )
    step = steps.min()
    day = np.timedelta64(1, "D")
    if step not in (np.timedelta64(30, "m"), np.timedelta64(60, "m"), day):
        raise DataValidationError(
            table.path, column, f"time step {step.astype('timedelta64[m]')} : MDS needs half-hourly, hourly or daily data"
        )
    irregular = steps != step
    if np.any(irregular):
        i = int(np.flatnonzero(irregular)[0]) + 1
        raise DataValidationError(
            table.path, column,
            f"{int(irregular.sum())} irregular step(s), first {ends[i - 1]} (line {table.rows[i - 1] + 1}) to {ends[i]} "
            f"(line {table.rows[i] + 1}): MDS counts time steps, so every step must be present (use -9999 rows for gaps)",
        )
    starts = ends - step if is_end else ends
    return starts, int(day // step), column


def _pick(table: _Table, explicit: str | None, candidates: tuple[str, ...], what: str, required: bool):
    from kgml.data.schema import DataValidationError

    if explicit is not None:
        if explicit not in table.columns:
            raise DataValidationError(table.path, explicit, f"{what} column not in the file (columns: {table.columns[:12]} ...)")
        return explicit
    for cand in candidates:
        if cand in table.columns:
            return cand
    if required:
        raise DataValidationError(
            table.path, candidates[0],
            f"required {what} column not found (looked for {', '.join(candidates)}); pass it with the option",
        )
    return None


def _format(value: float, missing: str) -> str:
    import math

    if value is None or not math.isfinite(value):
        return missing
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.7g}"


def vpd_from_rh(tair, rh):
    """Vapour pressure deficit (hPa) from air temperature (°C) and relative humidity (%):
    VPD = e°(T) (1 − RH/100), e° from `process_models.forcing.saturation_vapour_pressure` (kPa → hPa)."""
    import numpy as np

    from process_models.constants import HPA_PER_KPA
    from process_models.forcing import saturation_vapour_pressure

    es_hpa = np.asarray(saturation_vapour_pressure(np.asarray(tair, dtype=np.float32)), dtype=float) * HPA_PER_KPA
    return es_hpa * (1.0 - np.asarray(rh, dtype=float) / 100.0)


def gapfill_file(
    path,
    out,
    *,
    flux: list[str] | None = None,
    method: str = "mds",
    sw_in: str | None = None,
    tair: str | None = None,
    vpd: str | None = None,
    max_flag: int = 0,
    min_fraction: float = 0.5,
    use_qc: bool = True,
    fill_all: bool = True,
    overwrite: bool = False,
    hybrid_config=None,
    progress: bool = False,
    seed: int = 0,
) -> GapfillReport:
    """Gap-fill ``flux`` columns of ``path`` and write ``out`` in the same format with added columns.

    Gaps: -9999/NA values, plus (``use_qc``) values whose ``<COL>_QC`` flag exceeds ``max_flag`` (sub-daily)
    or whose ``<COL>_QC`` fraction is below ``min_fraction`` (daily). Raises `DataValidationError` naming the
    file, column and problem for bad input; `FileExistsError` when ``out`` is the input (always) or exists
    (unless ``overwrite``). The output is written atomically (`kgml.io.atomic_path`). ``hybrid_config``: a
    `kgml.fluxsite.fluxhybrid.HybridConfig` for ``method="hybrid"`` (default settings when None); ``progress``: progress
    bars (MDS look-up stages, the hybrid's training); ``seed``: of the gbm / rf fillers and of a default hybrid config.
    """
    import warnings

    import numpy as np

    from kgml.data.schema import DataValidationError
    from kgml.fluxsite.gapfill import mds_gapfill, ml_gapfill
    from kgml.io import atomic_path

    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve() or (out.exists() and path.exists() and out.samefile(path)):
        raise FileExistsError(f"refusing to overwrite the input file {path}; choose another --out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --force (overwrite=True) to replace it")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    table = _read_table(path)
    frame = _frame(table)
    starts, per_day, _ = _times(table, frame)
    flux_cols = flux or [_pick(table, None, _FLUX_CANDIDATES, "flux (NEE)", True)]
    sw_col = _pick(table, sw_in, _SW_CANDIDATES, "incoming shortwave radiation (SW_IN)", True)
    ta_col = _pick(table, tair, _TA_CANDIDATES, "air temperature (TA)", False)
    vpd_col = _pick(table, vpd, _VPD_CANDIDATES, "vapour pressure deficit (VPD)", False)
    notes = []
    if ta_col is None or vpd_col is None:
        missing = [n for n, c in (("TA", ta_col), ("VPD", vpd_col)) if c is None]
        notes.append(f"no {' or '.join(missing)} column: look-ups on SW_IN only (REddyProc's limited MDS)")
    sw = frame[sw_col].to_numpy(dtype=float)
    if not np.isfinite(sw).any():
        raise DataValidationError(path, sw_col, "all values are missing; MDS needs incoming shortwave radiation")
    ta = frame[ta_col].to_numpy(dtype=float) if ta_col else None
    vp = frame[vpd_col].to_numpy(dtype=float) if vpd_col else None
    rh_col = next((c for c in _RH_CANDIDATES if c in table.columns), None)
    if vp is None and ta is not None and rh_col is not None and vpd is None:
        vp = vpd_from_rh(ta, frame[rh_col].to_numpy(dtype=float))
        notes[-1:] = [f"VPD computed from {rh_col} and {ta_col} (FAO-56 Tetens saturation vapour pressure)"]

    swc = None
    if method == "hybrid":
        if ta is None:
            raise DataValidationError(path, _TA_CANDIDATES[0], "the hybrid filler needs air temperature (Reco = Rb Q10^((TA-15)/10)); pass --ta")
        swc_col = _pick(table, None, _SWC_CANDIDATES, "soil water content", False)
        if swc_col is not None:
            swc = frame[swc_col].to_numpy(dtype=float)
            notes.append(f"hybrid: soil water content from {swc_col}")

    tag = {"mds": "MDS", "gbm": "GBM", "rf": "RF", "hybrid": "HYB"}[method]
    if table.kind == "reddyproc":
        suffixes = [("_f", "--"), ("_fqc", "--"), ("_fsd", "--"), ("_fnum", "--"), ("_fmeth", "--"), ("_fwin", "days")]
        if method != "mds":
            suffixes = [(f"_{method}_f", "--"), (f"_{method}_fqc", "--"), (f"_{method}_fsd", "--")]
        if method == "hybrid":
            suffixes += [("_hybrid_GPP", "--"), ("_hybrid_Reco", "--")]
    else:
        suffixes = [(f"_F_{tag}", ""), (f"_F_{tag}_QC", ""), (f"_F_{tag}_SD", "")]
        if method == "mds":
            suffixes += [("_F_MDS_N", ""), ("_F_MDS_METHOD", ""), ("_F_MDS_WINDOW", "")]
        if method == "hybrid":
            suffixes += [("_F_HYB_GPP", ""), ("_F_HYB_RECO", "")]

    added, values, counts = [], [], {}
    for col in flux_cols:
        if col not in table.columns:
            raise DataValidationError(path, col, f"flux column not in the file (columns: {table.columns[:12]} ...)")
        y = frame[col].to_numpy(dtype=float).copy()
        qc_col = f"{col}_QC"
        if use_qc and qc_col in frame:
            flag = frame[qc_col].to_numpy(dtype=float)
            bad = np.isfinite(flag) & ((flag > max_flag) if per_day > 1 else (flag < min_fraction))
            y[bad] = np.nan
        if not np.isfinite(y).any():
            why = "all values are missing (-9999/NA)" if not np.isfinite(frame[col].to_numpy(dtype=float)).any() else (
                f"no value passes QC ({qc_col})")
            raise DataValidationError(path, col, f"{why}: nothing to fill from")
        gaps = ~np.isfinite(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "mds":
                res = mds_gapfill(y, sw, ta, vp, steps_per_day=per_day, fill_all=fill_all, source=f"{path} {col}",
                                  progress=progress)
                cols = [res.filled, np.where(res.qc >= 0, res.qc, np.nan), res.sd, res.n.astype(float),
                        np.where(res.method > 0, res.method, np.nan), res.window]
                qc = res.qc
            elif method == "hybrid":
                from kgml.fluxsite.fluxhybrid import HybridConfig, hybrid_gapfill

                drivers = {k: v for k, v in (("sw_in", sw), ("tair", ta), ("vpd", vp), ("swc", swc)) if v is not None}
                res = hybrid_gapfill(y, drivers, starts, config=hybrid_config or HybridConfig(seed=seed), source=f"{path} {col}",
                                     progress=progress)
                qc = res.qc
                sd = res.sd if fill_all else np.where(gaps, res.sd, np.nan)
                cols = [res.filled, res.qc.astype(float), sd, res.gpp, res.reco]
                notes.append(f"hybrid {col}: Q10 = {np.mean(res.fit.q10):.2f} ± {np.std(res.fit.q10):.2f} (ensemble), "
                             f"sd calibration factor {res.fit.calibration:.2f}, {res.fit.seconds:.1f} s")
            else:
                drivers = {k: v for k, v in (("sw_in", sw), ("tair", ta), ("vpd", vp)) if v is not None}
                res = ml_gapfill(y, drivers, starts, model=method, fill_all=fill_all, source=f"{path} {col}",
                                 seed=seed)
                qc = res.qc
                cols = [res.filled, np.where(res.qc >= 0, res.qc, np.nan), res.sd]
        clash = [col + s for s, _ in suffixes if col + s in table.columns]
        if clash:
            raise DataValidationError(path, clash[0], "output column already in the file (was it gap-filled already?)")
        added += [col + s for s, _ in suffixes]
        values += cols
        counts[col] = {
            "gaps": int(gaps.sum()), "filled": int((gaps & (qc > 0)).sum()), "unfilled": int((gaps & (qc < 0)).sum()),
            "A": int((gaps & (qc == 1)).sum()), "B": int((gaps & (qc == 2)).sum()), "C": int((gaps & (qc == 3)).sum()),
        }

    lines = list(table.lines)
    sep, token = table.sep, table.missing_token
    lines[table.header_index] += sep + sep.join(added)
    if table.kind == "reddyproc":
        units = [u for _ in flux_cols for _, u in suffixes]
        lines[1] += sep + sep.join(units)
    matrix = np.stack(values, axis=1)
    for k, i in enumerate(table.rows):
        lines[i] += sep + sep.join(_format(v, token) for v in matrix[k])
    text = ("\ufeff" if table.bom else "") + table.newline.join(lines)
    data = text.encode("utf-8")
    with atomic_path(out) as tmp:
        if out.suffix == ".gz":
            with gzip.open(tmp, "wb") as fh:
                fh.write(data)
        else:
            tmp.write_bytes(data)
    return GapfillReport(path, out, table.kind, per_day, counts, added, notes)
