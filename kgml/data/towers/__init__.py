"""Eddy-covariance tower readers → validated ``(site, time)`` datasets with canonical names and units.

Formats: FLUXNET2015 / ONEFlux FULLSET and SUBSET at HH, HR, DD, WW, MM, YY (incl. ICOS Warm Winter 2020),
FLUXNET-column tables such as the AGDS daily CSVs, AmeriFlux BASE (TIMESTAMP_START/END), ONEFlux measured-NEE
``*_qca_ustar_*`` files, and the REddyProc / bigleaf example formats.

Conventions of every output:

* dims ``(site, time)``; ``time`` is the *start* of the averaging period in local standard time (FLUXNET
  convention; the site's offset from UTC is the ``utc_offset`` coordinate when known); DD/WW stamps are
  midnight, MM the first of the month, YY 1 January. ``ds.attrs["time_resolution"]`` is HH/HR/DD/WW/MM/YY.
* -9999 (and NA) → NaN; quality-flagged values → NaN (`QCPolicy`).
* fluxes are rates in gC m-2 d-1 at every resolution (HH/HR µmol CO2 m-2 s-1 × 1.0377; YY totals ÷ days in
  the year); precipitation is a rate in mm d-1 (a half-hour's 1 mm is 48 mm d-1); pressure in Pa.
* coordinates on ``site``: lat, lon, elevation, igbp, utc_offset (+ site_name, mat, map, koeppen when a table
  has them), and ``source_file``.

Error policy: single-file readers raise `DataValidationError` (naming file, variable, problem). Directory
readers default to ``errors="warn"``: a bad file is skipped with a `DataWarning` carrying the same message and
listed in ``ds.attrs["skipped_files"]``, so one bad site never loses the others; ``errors="raise"`` stops at
the first bad file; if no file can be read the directory reader raises.

The package by format: `common` (shared reading, timestamps, mapping, assembly), `fluxnet`, `ameriflux`,
`examples` (REddyProc, bigleaf), `aggregate`.
"""

from __future__ import annotations

from kgml.data.towers.aggregate import (
    aggregate_to,
)
from kgml.data.towers.ameriflux import (
    qca_site,
    read_ameriflux_base,
    read_oneflux_qca,
    read_oneflux_qca_dir,
)
from kgml.data.towers.common import (
    FLUX_VARIABLES,
    MISSING_VALUE,
    NO_QC,
    RESOLUTIONS,
    FluxnetFileInfo,
    QCPolicy,
    parse_fluxnet_filename,
)
from kgml.data.towers.examples import (
    read_bigleaf_csv,
    read_reddyproc_nc,
    read_reddyproc_table,
)
from kgml.data.towers.fluxnet import (
    combine_sites,
    read_fluxnet_dir,
    read_fluxnet_file,
)

__all__ = [
    "NO_QC",
    "FLUX_VARIABLES",
    "MISSING_VALUE",
    "RESOLUTIONS",
    "FluxnetFileInfo",
    "QCPolicy",
    "aggregate_to",
    "combine_sites",
    "parse_fluxnet_filename",
    "qca_site",
    "read_ameriflux_base",
    "read_bigleaf_csv",
    "read_fluxnet_dir",
    "read_fluxnet_file",
    "read_oneflux_qca",
    "read_oneflux_qca_dir",
    "read_reddyproc_nc",
    "read_reddyproc_table",
]
