"""Generate tests/golden/pmodel_pyrealm.json: P-model outputs from pyrealm on a small grid of drivers.

pyrealm is NOT a dependency of kgml or of its tests: this script is run by hand (``pip install pyrealm==2.0.0``,
then ``python tests/golden/make_pmodel_golden.py``) and the JSON it writes is committed. The test
``tests/process_models/test_photosynthesis.py`` compares `process_models.photosynthesis.pmodel_state` and
`pmodel_gpp` with these values.

Settings (the ones `pmodel_state` implements): PModel(method_optchi="prentice14", method_jmaxlim="wang17",
method_kphio="temperature", method_arrhenius="simple", reference_kphio=0.081785), default PModelConst/CoreConst
(water density "fisher", Huber viscosity). Units as pyrealm: tc °C, vpd Pa, co2 ppm, patm Pa, ppfd µmol m-2 s-1,
ca/gammastar/kmm Pa, lue gC mol-1, gpp µgC m-2 s-1.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pyrealm
from pyrealm.pmodel import PModel, PModelEnvironment

OUT = Path(__file__).with_name("pmodel_pyrealm.json")
REFERENCE_KPHIO = 0.081785  # Stocker et al. (2020) setup BRC
SETTINGS = dict(
    method_optchi="prentice14",
    method_jmaxlim="wang17",
    method_kphio="temperature",
    method_arrhenius="simple",
    reference_kphio=REFERENCE_KPHIO,
)

TC = [-20.0, -5.0, 0.0, 10.0, 20.0, 25.0, 30.0, 40.0]
VPD_PA = [0.0, 50.0, 500.0, 1500.0, 4000.0]
CO2 = [280.0, 400.0, 700.0]
PATM = [70000.0, 101325.0]


def main() -> None:
    grid = np.array(list(itertools.product(TC, VPD_PA, CO2, PATM)))
    tc, vpd, co2, patm = grid.T
    n = len(tc)
    # deterministic, varied light and fAPAR so GPP is not a scaled copy of LUE
    ppfd = 100.0 + 900.0 * ((np.arange(n) * 7919) % 97) / 96.0
    fapar = 0.1 + 0.85 * ((np.arange(n) * 104729) % 89) / 88.0
    env = PModelEnvironment(tc=tc, vpd=vpd, co2=co2, patm=patm, ppfd=ppfd, fapar=fapar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyrealm 2.0's note on the new default phi0
        model = PModel(env, **SETTINGS)
    out = dict(
        tc=tc, vpd_pa=vpd, co2_ppm=co2, patm_pa=patm, ppfd=ppfd, fapar=fapar,
        ca=env.ca, gammastar=env.gammastar, kmm=env.kmm, ns_star=env.ns_star,
        xi=model.optchi.xi, chi=model.optchi.chi, mj=model.optchi.mj, mc=model.optchi.mc,
        f_v=model.jmaxlim.f_v, kphio=model.kphio.kphio, lue=model.lue, gpp=model.gpp,
    )
    cols = {
        k: [float(f"{x:.10g}") if np.isfinite(x) else None for x in np.broadcast_to(v, (n,))]
        for k, v in out.items()
    }
    doc = {
        "description": "P-model golden values from pyrealm (see tests/golden/make_pmodel_golden.py)",
        "pyrealm_version": pyrealm.__version__,
        "numpy_version": np.__version__,
        "settings": SETTINGS,
        "units": {
            "tc": "degC", "vpd_pa": "Pa", "co2_ppm": "ppm", "patm_pa": "Pa", "ppfd": "umol m-2 s-1",
            "fapar": "-", "ca": "Pa", "gammastar": "Pa", "kmm": "Pa", "ns_star": "-", "xi": "Pa^0.5",
            "chi": "-", "mj": "-", "mc": "-", "f_v": "-", "kphio": "mol mol-1", "lue": "gC mol-1",
            "gpp": "ugC m-2 s-1",
        },
        "null_means": "NaN in pyrealm (f_v, lue, gpp undefined where mj <= c* = 0.41)",
        "n": n,
        "columns": cols,
    }
    # one line per column keeps the file small and diffable
    body = json.dumps({k: v for k, v in doc.items() if k != "columns"}, indent=1)[:-2]
    columns = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in cols.items())
    OUT.write_text(f'{body},\n "columns": {{\n{columns}\n }}\n}}\n')
    json.loads(OUT.read_text())  # the file must stay valid JSON
    print(f"wrote {OUT} ({n} rows, pyrealm {pyrealm.__version__})")


if __name__ == "__main__":
    main()
