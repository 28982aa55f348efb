"""Issue 16 item 5: data files are recognised by their content, wherever they live and whatever they are called.

* kgml/data holds no hard-coded data file name (a literal such as ``"srdb-data.csv"``, a glob such as
  ``"*.nc"`` or ``"*_qca_ustar_*"``, a suffix test such as ``== ".gz"``): `test_no_hard_coded_data_file_names`,
  with tests that the scan fails when such a literal is put back.
* Renamed copies of tower, COSORE and yield files (generated here, or a few rows of ../shared/data written to
  tmp_path) load exactly as the originals; the site comes from the file name when it follows the FLUXNET /
  AmeriFlux / ICOS convention, else ``--site``, else the site table, else a one-line error asking for ``--site``.
"""

from __future__ import annotations

import ast
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kgml.cli import main as kgml_main
from kgml.data.formats import files_of, is_gzip, recognise, site_from_name
from kgml.data.schema import DataValidationError
from kgml.data.soil_respiration import cosore_files, read_cosore, read_cosore_dataset
from kgml.data.summary import find_kind, load_folder
from kgml.data.towers import read_fluxnet_file
from kgml.data.yields import read_nass_county, read_nass_state, read_you2017_soybean

from .fluxfiles import fluxnet_frame, fluxnet_name, write_frame
from .test_soil_respiration_readers import hourly_rows, write_cosore

DATA_PACKAGE = Path(__file__).resolve().parents[3] / "kgml" / "data"

#: A literal that names a data file or a pattern of names: ``name.ext``, ``*.ext``, ``.ext``, ``*_x_*.csv*``.
_EXTENSIONS = r"csv|tsv|txt|dat|nc|nc4|cdf|h5|hdf5?|met|wth|sol|gz|zip|bz2|xz|json|rda|rdata|rds|xlsx?|npz|parquet"
_FILE_LIKE = re.compile(rf"[\w*?\[\]\-.]*\.(?:{_EXTENSIONS})(?:\.(?:gz|zip|bz2|xz))?\*?", re.IGNORECASE)
#: A glob pattern of names without an extension: ``Example_*``, ``corn_*weekly*``, ``*_qca_ustar_*``.
_GLOB_LIKE = re.compile(r"[\w\-.\[\]]*\*[\w\-.*?\[\]]*")
#: Content, not names: DSSAT section markers at the start of a file's first line (``*WEATHER``, ``*EXP.DETAILS``).
_SECTION_MARK = re.compile(r"\*[A-Z][A-Z .]*")
#: Literals that are kgml's own output names, not data it looks up: (module, literal) → why allowed.
_ALLOWED = {
    ("cache.py", ".nc"): "the cache's own netCDF files, written and read back by kgml.data.cache",
    ("yields.py", "W_5_*"): "the weekly tmin columns W_5_1 ... W_5_52, named in an error message",
    ("stations.py", "weather_ames_ia.json"): "kgml's packaged generator resource (kgml/resources), not user data",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def offending_literals(source: str, module: str = "<source>") -> list[str]:
    """``module:line: literal`` for every string literal (or f-string piece) that is a data file name or pattern,
    and every literal pattern given to ``glob``/``rglob``/``fnmatch`` (docstrings and comments excluded)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.strip()
            glob = _GLOB_LIKE.fullmatch(text) and re.search(r"\w", text) and not _SECTION_MARK.fullmatch(text)
            named = _FILE_LIKE.fullmatch(text) or glob
            if named and (module, text) not in _ALLOWED:
                found.append(f"{module}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in ("glob", "rglob", "fnmatch", "iglob") and node.args:
                arg = node.args[-1] if name == "fnmatch" else node.args[0]
                if isinstance(arg, (ast.Constant, ast.JoinedStr)) and not (
                        isinstance(arg, ast.Constant) and arg.value in ("*", "**/*")):
                    found.append(f"{module}:{node.lineno}: {name}({ast.unparse(arg)})")
    return found


def test_no_hard_coded_data_file_names():
    problems = []
    for path in sorted(DATA_PACKAGE.glob("*.py")):
        problems += offending_literals(path.read_text(), path.name)
    assert not problems, "data file names hard-coded in kgml/data (recognise files by content instead):\n" + "\n".join(problems)


@pytest.mark.parametrize("line", [
    'AMES_FILE = "Ames_2000-2018_excl2014-2015.met"',
    'file = path / "srdb-data.csv"',
    'files = sorted(folder.glob("*.nc"))',
    'files = sorted(folder.glob("*_qca_ustar_*.csv*"))',
    'kind = _has("Example_*")',
    'if path.suffix == ".gz": pass',
    'name = f"{year}_{treatment}_biomass_std.csv"',
    'found = list(folder.rglob(f"{site}*"))',
])
def test_the_scan_fails_when_a_file_name_is_put_back(line):
    """The scan is not vacuous: each way of hard-coding a file name, added to a real module, is caught."""
    source = (DATA_PACKAGE / "stations.py").read_text() + "\n\ndef _put_back(folder, path, year, treatment, site):\n    " + line + "\n"
    found = offending_literals(source, "stations.py")
    last_line = str(source.count("\n"))
    assert found and {f.split(":")[1] for f in found} == {last_line}  # caught, and only the line put back
    assert not offending_literals('message = "DESCRIPTION.txt is missing from the COSORE dataset folder"')


# --- recognition of generated files ---------------------------------------------------------------------


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_frame(frame, path)


def _gzip_copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def test_formats_by_content_not_by_name(tmp_path):
    """A FLUXNET daily table called anything, gzipped without a .gz suffix, is a FLUXNET table; the same bytes
    with another header are not."""
    original = _write(fluxnet_frame("DD", n=40), tmp_path / fluxnet_name("US-Syn", "DD"))
    plain = shutil.copy(original, tmp_path / "export")
    packed = _gzip_copy(original, tmp_path / "export.bin")
    assert is_gzip(packed) and not is_gzip(plain)
    assert recognise(original) == recognise(plain) == recognise(packed) == "fluxnet"
    other = tmp_path / "notes.csv"
    other.write_text("day,value\n1,2\n")
    assert recognise(other) is None and recognise(tmp_path / "missing.csv") is None
    assert files_of(tmp_path, "fluxnet") == sorted([original, Path(plain), packed])


def test_site_from_the_name_then_option_then_table_else_error(tmp_path, capsys):
    frame = fluxnet_frame("DD", n=40)
    reference = read_fluxnet_file(_write(frame, tmp_path / "ref" / fluxnet_name("US-Syn", "DD")), site_metadata=None)
    # 1. a renamed table whose name carries the site code in the convention
    named = tmp_path / "named"
    _write(frame, named / "US-Syn_tower_export.csv")
    assert site_from_name(named / "US-Syn_tower_export.csv") == "US-Syn"
    kind, parts = load_folder(named)
    ds = parts[0][1]
    assert kind == "FLUXNET-column daily tables" and list(ds.site.values) == ["US-Syn"]
    np.testing.assert_array_equal(ds.nee.values, reference.nee.values)
    # 2. no site in the name: an error that asks for --site, then --site names it
    bare = tmp_path / "bare"
    _gzip_copy(_write(frame, tmp_path / "plain" / "tower.csv"), bare / "tower.dat")
    with pytest.raises(DataValidationError, match=r"--site"):
        load_folder(bare)
    code = kgml_main(["data", "summary", "--data-dir", str(tmp_path), "--only", "bare"])
    out = capsys.readouterr().out
    assert code == 1 and "--site" in out and "Traceback" not in out
    ds = load_folder(bare, site="US-Opt")[1][0][1]
    assert list(ds.site.values) == ["US-Opt"]
    np.testing.assert_array_equal(ds.nee.values, reference.nee.values)
    code = kgml_main(["data", "summary", "--data-dir", str(tmp_path), "--only", "bare", "--site", "US-Opt"])
    assert code == 0 and "1 site" in capsys.readouterr().out
    # a name that says one site and an option that says another is an error, not a silent choice
    with pytest.raises(DataValidationError, match=r"says site US-Syn but --site US-Opt"):
        load_folder(named, site="US-Opt")
    # 3. no site in the name, no option: the site table (whatever it is called) when it lists one site
    (bare / "where.csv").write_text("site_id,lat,lon\nUS-Tab,41.1,-96.5\n")
    ds = load_folder(bare)[1][0][1]
    assert list(ds.site.values) == ["US-Tab"] and float(ds.lat[0]) == pytest.approx(41.1)


def _cosore_renamed(folder: Path, rows) -> Path:
    """A COSORE dataset whose three files have other names (and the flux table is gzipped without .gz)."""
    conventional = write_cosore(folder.parent / "conventional" / folder.name, rows)
    folder.mkdir(parents=True)
    shutil.copy(conventional / "DESCRIPTION.txt", folder / "site_metadata")
    shutil.copy(conventional / "PORTS.txt", folder / "chambers.csv")
    shutil.copy(conventional / "data.csv.gz", folder / "fluxes")
    return conventional


def test_renamed_cosore_dataset_reads_as_the_original(tmp_path):
    rows = hourly_rows("2020-06-01") + hourly_rows("2020-06-01", port=2, flux=1.0)
    renamed = tmp_path / "renamed" / "d20200101_TEST"
    conventional = _cosore_renamed(renamed, rows)
    assert {k: p.name for k, p in cosore_files(renamed).items()} == {
        "description": "site_metadata", "ports": "chambers.csv", "data": "fluxes"}
    a, b = read_cosore_dataset(conventional), read_cosore_dataset(renamed)
    assert list(a.site.values) == list(b.site.values) == ["d20200101_TEST/1", "d20200101_TEST/2"]
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    # the folder of datasets need not be called datasets/ (nor the root cosore)
    assert list(read_cosore(tmp_path / "renamed").site.values) == list(a.site.values)
    (tmp_path / "archive" / "all").mkdir(parents=True)
    shutil.copytree(renamed, tmp_path / "archive" / "all" / renamed.name)
    assert find_kind(tmp_path / "archive").name == "COSORE chamber soil respiration"
    # a dataset whose description cannot be found by content or by the standard's name is reported, not dropped
    broken = tmp_path / "renamed" / "d20200102_NODESC"
    broken.mkdir()
    shutil.copy(conventional / "data.csv.gz", broken / "fluxes")
    ds = read_cosore(tmp_path / "renamed")
    assert "d20200102_NODESC" in ds.attrs["skipped_files"] and "DESCRIPTION.txt is missing" in ds.attrs["skipped_files"]


def _you2017(folder: Path, full_name: str, hq_name: str, loc_name: str) -> None:
    folder.mkdir(parents=True)
    full = pd.DataFrame({"year": [2012, 2012, 2013, 2013], "state_fips": [17, 17, 17, 17],
                         "county_fips": [1, 3, 1, 3], "soybean_yield_bu_per_acre": [45.0, 50.5, 47.0, 52.0]})
    full.to_csv(folder / full_name, index=False)
    full.iloc[[0, 2]].to_csv(folder / hq_name, index=False)
    pd.DataFrame({"state_fips": [17, 17], "county_fips": [1, 3], "lon": [-91.2, -89.35], "lat": [39.99, 37.18]}
                 ).to_csv(folder / loc_name, index=False)


def test_renamed_yield_tables_read_as_the_originals(tmp_path):
    _you2017(tmp_path / "orig", "soybean_yield_county.csv", "soybean_yield_county_highquality.csv", "county_locations.csv")
    _you2017(tmp_path / "renamed", "b.csv", "a.csv", "centroids")
    for hq in (False, True):
        a = read_you2017_soybean(tmp_path / "orig", high_quality=hq)
        b = read_you2017_soybean(tmp_path / "renamed", high_quality=hq)
        assert list(a.county.values) == list(b.county.values)
        np.testing.assert_array_equal(a.crop_yield.values, b.crop_yield.values)
        np.testing.assert_array_equal(a.lat.values, b.lat.values)
    assert read_you2017_soybean(tmp_path / "renamed", high_quality=True).crop_yield.notnull().sum() == 2
    assert find_kind(tmp_path / "renamed").name == "NASS county yields (You et al. 2017)"
    # NASS state tables: recognised by content; the crop, which the columns do not say, from the name or crop=
    text = 'year\tstate\tacres\tyield\n2000\t"Iowa"\t100\t150\n2001\t"Iowa"\t100\t160\n'
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "iowa_corn_by_year").write_text(text)
    (tmp_path / "state" / "table2.txt").write_text(text)
    assert files_of(tmp_path / "state", "nass_state") == [tmp_path / "state" / "iowa_corn_by_year",
                                                         tmp_path / "state" / "table2.txt"]
    corn = read_nass_state(tmp_path / "state" / "iowa_corn_by_year")
    np.testing.assert_array_equal(corn.crop_yield.values, read_nass_state(tmp_path / "state" / "table2.txt", "corn").crop_yield.values)
    with pytest.raises(DataValidationError, match="cannot tell the crop"):
        read_nass_state(tmp_path / "state" / "table2.txt")


# --- a few rows of the shared data under other names ------------------------------------------------------


def _head_rows(src: Path, dst: Path, n: int, *, gz: bool = False) -> Path:
    raw = gzip.decompress(src.read_bytes()) if is_gzip(src) else src.read_bytes()
    lines = raw.decode("utf-8").splitlines(keepends=True)[:n]
    data = "".join(lines).encode()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(data) if gz else data)
    return dst


@pytest.mark.realdata
def test_shared_tower_cosore_and_yield_rows_renamed(tmp_path, dataset_dir):
    """Rows cut from ../shared/data (never committed: written to tmp_path) load the same under other names."""
    dd = dataset_dir("fluxnet2015_subset_dd_us-ne1")
    flx = files_of(dd, "fluxnet")[0]
    _head_rows(flx, tmp_path / "a" / flx.name, 400)
    shutil.copy(files_of(dd, "site_table")[0], tmp_path / "a" / "sites.csv")
    renamed = _head_rows(flx, tmp_path / "b" / "ne1_daily_export", 400, gz=True)
    shutil.copy(files_of(dd, "site_table")[0], tmp_path / "b" / "towers_table.txt")
    a = load_folder(tmp_path / "a")[1][0][1]
    b = load_folder(tmp_path / "b")[1][0][1]  # site from the one-site table
    assert list(a.site.values) == list(b.site.values) == ["US-Ne1"] and renamed.exists()
    assert set(a.data_vars) == set(b.data_vars) and float(a.lat[0]) == float(b.lat[0])
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    # COSORE: the first rows of one dataset's three files under other names
    src = dataset_dir("cosore")
    base = next(p for p in sorted(src.rglob("*")) if p.is_dir() and cosore_files(p)["data"] is not None)
    parts = cosore_files(base)
    for root, names in (("c", ("DESCRIPTION.txt", "PORTS.txt", "data.csv.gz")), ("d", ("info", "ports.tsv", "flux"))):
        folder = tmp_path / root / "ds" / base.name
        folder.mkdir(parents=True)
        shutil.copy(parts["description"], folder / names[0])
        shutil.copy(parts["ports"], folder / names[1])
        _head_rows(parts["data"], folder / names[2], 3000, gz=True)
    c, d = read_cosore(tmp_path / "c"), read_cosore(tmp_path / "d")
    assert list(c.site.values) == list(d.site.values) and c.sizes == d.sizes
    xr.testing.assert_identical(c.drop_attrs(), d.drop_attrs())
    # yields: a NASS county table and its centroids under other names, compared with the conventional names
    you = dataset_dir("usda_nass_soybean_county_yield_you2017")
    full, _ = __import__("kgml.data.yields", fromlist=["you2017_tables"]).you2017_tables(you)
    locations = files_of(you, "county_locations")[0]
    _head_rows(full, tmp_path / "e" / "soy_counties.dat", 500)
    shutil.copy(locations, tmp_path / "e" / "centroids")
    e = read_nass_county(_head_rows(full, tmp_path / "f" / full.name, 500), "soybean", locations=locations)
    g = read_you2017_soybean(tmp_path / "e")
    np.testing.assert_array_equal(e.crop_yield.values, g.crop_yield.values)
    assert list(e.county.values) == list(g.county.values)


@pytest.mark.realdata
def test_every_shared_data_file_is_recognised(data_dir):
    """Every data file of ../shared/data that a reader reads is recognised by its content (licences, SOURCE.md,
    R binaries and variable-code tables are not data kgml reads)."""
    expected = {
        "agds_fluxnet2015_daily_4sites": {"fluxnet": 3, "site_table": 1},
        "fluxnet2015_subset_mm": {"fluxnet": 137, "site_table": 1},
        "oneflux_qca_ustar_hourly": {"qca_ustar": 62},
        "cosore": {"cosore_description": 55, "cosore_ports": 55, "cosore_data": 55, "cosore_index": 1},
        "reddyproc_examples": {"reddyproc": 2, "reddyproc_nc": 1},
        "usda_nass_soybean_county_yield_you2017": {"you2017_yield": 2, "county_locations": 1},
        "dssat_midwest_maize_soybean_experiments": {"dssat_experiment": 11, "dssat_observed": 20, "dssat_weather": 44,
                                                    "dssat_soil": 1},
        "wfde5_hourly_forcing_uk_2017-01": {"netcdf_grid": 6},
    }
    for name, counts in expected.items():
        folder = data_dir / name
        if not folder.is_dir():
            continue
        found: dict[str, int] = {}
        for p in folder.rglob("*"):
            kind = recognise(p)
            if kind is not None:
                found[kind] = found.get(kind, 0) + 1
        assert found == counts, name


def test_reddyproc_table_site_from_name_then_option_then_table(tmp_path):
    """The REddyProc readers follow the same order: a site code in the name, else site=, else the one-site table
    beside the file, else an error that asks for --site."""
    from kgml.data.towers import read_reddyproc_table

    times = pd.date_range("2004-01-01 00:30", periods=96, freq="30min")
    frame = pd.DataFrame({"DateTime": times.strftime("%Y-%m-%d %H:%M:%S"), "NEE": np.linspace(-2, 2, 96),
                          "Ustar": 0.3, "Tair": 5.0, "rH": 80.0, "Rg": 0.0})
    folder = tmp_path / "record"
    folder.mkdir()
    frame.to_csv(folder / "halfhours.csv", index=False)
    assert recognise(folder / "halfhours.csv") == "reddyproc"
    with pytest.raises(DataValidationError, match=r"halfhours\.csv.*--site"):
        read_reddyproc_table(folder / "halfhours.csv")
    assert list(read_reddyproc_table(folder / "halfhours.csv", site="DE-Opt").site.values) == ["DE-Opt"]
    (folder / "station").write_text("siteid,lat,lon\nDE-Tab,50.9,13.6\n")
    assert list(read_reddyproc_table(folder / "halfhours.csv").site.values) == ["DE-Tab"]
    shutil.copy(folder / "halfhours.csv", folder / "DE-Nam_halfhours.csv")
    assert list(read_reddyproc_table(folder / "DE-Nam_halfhours.csv").site.values) == ["DE-Nam"]


def test_ameriflux_base_site_from_its_header_line_whatever_the_file_is_called(tmp_path):
    from kgml.data.towers import read_ameriflux_base

    times = pd.date_range("2019-06-01", periods=48, freq="30min")
    body = pd.DataFrame({"TIMESTAMP_START": times.strftime("%Y%m%d%H%M"),
                         "TIMESTAMP_END": (times + pd.Timedelta("30min")).strftime("%Y%m%d%H%M"),
                         "NEE_PI": np.linspace(-5, 5, 48).round(3), "TA": 20.0}).to_csv(index=False)
    path = tmp_path / "download"
    path.write_text("# Site: US-Hdr\n# Version: 1-5\n" + body)
    assert recognise(path) == "ameriflux_base"
    assert list(read_ameriflux_base(path, utc_offset=-6).site.values) == ["US-Hdr"]
    bare = tmp_path / "bare"
    bare.write_text("# Version: 1-5\n" + body)
    with pytest.raises(DataValidationError, match="--site"):
        read_ameriflux_base(bare, utc_offset=-6)


def test_a_gzip_damaged_in_its_first_bytes_is_skipped_with_a_warning(tmp_path):
    """A ``.gz`` whose magic bytes are gone matches no format: it is skipped, but with a DataWarning that names
    it (issue 16 item 4: never a silent loss), while the good files of the folder are still found."""
    import gzip

    from kgml.data.formats import files_of
    from kgml.data.schema import DataWarning

    good = tmp_path / "sites.csv"
    good.write_text("SITE_ID,LOCATION_LAT,LOCATION_LONG,IGBP\nUS-Ne1,41.2,-96.5,CRO\n")
    bad = tmp_path / "FLX_US-Xyz_FLUXNET2015_SUBSET_MM_2001-2002_1-4.csv.gz"
    raw = bytearray(gzip.compress(b"TIMESTAMP,NEE_VUT_REF\n200101,1.0\n"))
    raw[0:2] = b"\x00\x00"
    bad.write_bytes(bytes(raw))
    with pytest.warns(DataWarning, match=bad.name):
        found = files_of(tmp_path, "site_table")
    assert found == [good]
