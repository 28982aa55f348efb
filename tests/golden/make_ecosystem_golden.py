"""Generate tests/golden/ecosystem_daily.json: daily outputs of the coupled models before the drivers pass.

Run by hand (``python tests/golden/make_ecosystem_golden.py``) on the implementation to be preserved; the JSON
(inputs, per-site parameters, outputs and the git commit that produced them) is committed. The test
``tests/process_models/test_drivers_pass.py`` runs today's `simulate_sites` and `simulate` on the stored inputs and
requires every output to match within 1e-5 relative (issue 18: the state-independent terms moved out of the scan
must not change the physics). The commit it ran at is recorded in the file (``commit``).

Forcing: two sites (a humid and a semi-arid one, 365 days, seeded noise) so that water stress binds at one and
not the other; per-site parameters drawn around the defaults in unconstrained space (seeded).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("ecosystem_daily.json")
N_DAYS = 365
OUTPUTS = ("gpp", "reco", "nee", "et", "w", "lai", "crop_yield")


def forcing_arrays(seed: int = 18) -> dict[str, np.ndarray]:
    """(site, day) drivers of two sites: lat 45 °N humid, lat 35 °N semi-arid (float32)."""
    rng = np.random.default_rng(seed)
    from process_models.radiation import MJ_PER_DAY_PER_W, clear_sky_radiation

    doy = np.arange(1, N_DAYS + 1, dtype=np.float32)
    lat = np.array([[45.0], [35.0]], np.float32)
    season = -np.cos(2 * np.pi * (doy - 15) / 365.0)[None, :]
    tmean = np.array([[9.0], [16.0]]) + np.array([[13.0], [9.0]]) * season + rng.normal(0, 2.5, (2, N_DAYS))
    dtr = np.array([[10.0], [15.0]])
    clear = np.asarray(clear_sky_radiation(lat, doy[None, :])) / MJ_PER_DAY_PER_W
    sw = clear * rng.uniform(0.4, 0.95, (2, N_DAYS))
    wet = rng.random((2, N_DAYS)) < np.array([[0.35], [0.08]])
    precip = np.where(wet, rng.gamma(0.8, 12.0, (2, N_DAYS)), 0.0)
    lai = np.clip(2.5 + 2.2 * season, 0.2, None) * np.array([[1.1], [0.6]])
    return {
        "tmin": (tmean - dtr / 2).astype(np.float32),
        "tmax": (tmean + dtr / 2).astype(np.float32),
        "sw_in": sw.astype(np.float32),
        "precip": precip.astype(np.float32),
        "lai": lai.astype(np.float32),
        "doy": np.broadcast_to(doy, (2, N_DAYS)).astype(np.float32),
        "lat": np.broadcast_to(lat, (2, N_DAYS)).astype(np.float32),
    }


def models() -> dict:
    from process_models.ecosystem import NaturalEcosystem, maize, soybean
    from process_models.phenology import PrescribedLAI
    from process_models.photosynthesis import PModel
    from process_models.soil_respiration import DAMM, Q10Respiration

    return {
        "lue_prescribed_lai": NaturalEcosystem(phenology=PrescribedLAI()),
        "lue_gsi": NaturalEcosystem(),
        "pmodel_damm_gsi": NaturalEcosystem(photosynthesis=PModel(), soil_respiration=DAMM()),
        "lue_q10_prescribed_lai": NaturalEcosystem(phenology=PrescribedLAI(), soil_respiration=Q10Respiration()),
        "maize": maize(),
        "soybean": soybean(),
    }


def site_theta(model, seed: int) -> dict[str, np.ndarray]:
    """Two per-site parameter sets: unconstrained defaults + 0.3·N(0, 1) (seeded), mapped to physical values."""
    rng = np.random.default_rng(seed)
    return {
        s.name: np.asarray(s.to_physical(s.default_unconstrained + 0.3 * rng.standard_normal(2).astype(np.float32)),
                           np.float32)
        for s in model.parameter_specs
    }


def _informative(model, name: str) -> bool:
    """Skip outputs that are inputs or zero by construction (prescribed LAI; the yield of natural vegetation)."""
    from process_models.ecosystem import NaturalEcosystem
    from process_models.phenology import PrescribedLAI

    natural = isinstance(model, NaturalEcosystem)
    return not ((name == "crop_yield" and natural)
                or (name == "lai" and natural and isinstance(model.phenology, PrescribedLAI)))


def main() -> None:
    from process_models.forcing import make_met
    from process_models.simulate import simulate_sites

    f = forcing_arrays()
    met = make_met(**f)
    doc = {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        # float32 written with 9 significant digits: read back as float32, bit for bit the inputs used here
        "inputs": {k: [[float(f"{x:.9g}") for x in row] for row in v] for k, v in f.items() if k not in ("doy", "lat")},
        "lat": [45.0, 35.0],
        "models": {},
    }
    for i, (name, model) in enumerate(models().items()):
        theta = site_theta(model, seed=100 + i)
        out = simulate_sites(model, theta, met).outputs
        doc["models"][name] = {
            "theta": {k: [float(f"{x:.9g}") for x in v] for k, v in theta.items()},
            "outputs": {k: [[float(f"{x:.8g}") for x in row] for row in np.asarray(getattr(out, k), np.float64)]
                        for k in OUTPUTS if _informative(model, k)},
        }
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
