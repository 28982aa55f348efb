"""Physical constants used by the process models.

Each constant: symbol, value, units and source. Model code never writes a bare number that belongs here.
Append new constants at the end of the section they belong to.
"""

from __future__ import annotations

# --- Thermodynamics and gas law ---------------------------------------------------------------

#: Absolute zero offset, T[K] = T[°C] + KELVIN_OFFSET (K). SI definition.
KELVIN_OFFSET = 273.15

#: Universal gas constant R (J mol-1 K-1). CODATA 2018 (Tiesinga et al. 2021), exact.
GAS_CONSTANT = 8.314462618

#: Standard reference temperature for enzyme kinetics, 25 °C expressed in K. Bernacchi et al. (2001).
T_REF_25C_K = 298.15

#: Standard sea-level atmospheric pressure P0 (Pa). ICAO standard atmosphere (ISO 2533:1975).
P_STANDARD = 101325.0

#: Molar mass of carbon M_C (g mol-1). IUPAC standard atomic weight (conventional value).
MOLAR_MASS_C = 12.0107

#: Molar mass of water M_w (g mol-1). IUPAC.
MOLAR_MASS_WATER = 18.01528

#: Ratio of molar masses of water vapour and dry air ε (–). Allen et al. (1998) FAO-56, eq. 8 (0.622).
EPSILON_WATER_AIR = 0.622

#: Specific heat of moist air at constant pressure c_p (MJ kg-1 °C-1). Allen et al. (1998) FAO-56, eq. 8.
CP_AIR_MJ = 1.013e-3

# --- Time --------------------------------------------------------------------------------------

#: Seconds in a day (s d-1).
SECONDS_PER_DAY = 86400.0

#: Hours in a day (h d-1).
HOURS_PER_DAY = 24.0

#: Days per year used for annual conversions of rates (d yr-1); mean Julian year.
DAYS_PER_YEAR = 365.25

# --- Radiation -------------------------------------------------------------------------------

#: Solar constant G_sc (MJ m-2 min-1). Allen et al. (1998) FAO-56, eq. 21 (0.0820).
SOLAR_CONSTANT_MJ_PER_MIN = 0.0820

#: Stefan–Boltzmann constant σ (MJ K-4 m-2 d-1). Allen et al. (1998) FAO-56, eq. 39 (4.903e-9).
STEFAN_BOLTZMANN_MJ_DAY = 4.903e-9

#: Fraction of global shortwave radiation in the photosynthetically active band (–).
#: Monteith & Unsworth (2013) Principles of Environmental Physics, §11; MOD17 ATBD (Running & Zhao 2015) uses 0.45.
PAR_FRACTION_OF_SW = 0.45

#: Photon energy conversion for PAR, µmol J-1 (quanta per joule of PAR). McCree (1972), 4.57 µmol J-1
#: for daylight PAR; pyrealm/P-model use the same 4.57 (Stocker et al. 2020).
PAR_UMOL_PER_J = 4.57

# --- Carbon and mass units -----------------------------------------------------------------------

#: Grams of carbon per micromole of CO2 (g µmol-1) = M_C × 1e-6.
GC_PER_UMOL_CO2 = MOLAR_MASS_C * 1.0e-6

#: Conversion from g m-2 to t ha-1 (t ha-1 per g m-2): 1 g m-2 = 1e4 g ha-1 = 0.01 t ha-1.
T_HA_PER_G_M2 = 0.01

#: Carbon fraction of plant dry matter (g C g-1 DM). IPCC (2006) Guidelines Vol. 4, default 0.47;
#: crop models commonly use 0.45 (e.g. Monsi/Penning de Vries). We use 0.45 for crop organs.
CARBON_FRACTION_DRY_MATTER = 0.45

# --- Water ---------------------------------------------------------------------------------------

#: Latent heat of vaporisation λ at ~20 °C (MJ kg-1). Allen et al. (1998) FAO-56, eq. 7/p. 31 (2.45).
LATENT_HEAT_VAPORISATION = 2.45

#: Density of liquid water ρ_w (kg m-3), so 1 kg m-2 of water = 1 mm. CRC Handbook (4 °C: 999.97 ≈ 1000).
WATER_DENSITY = 1000.0

# --- Photosynthesis (appended by process_models/photosynthesis.py) -----------------------------

#: Seconds in an hour (s h-1).
SECONDS_PER_HOUR = 3600.0

#: Pascal per hectopascal (Pa hPa-1); VPD is carried in hPa, the P-model and Collatz–Farquhar work in Pa.
PA_PER_HPA = 100.0

#: Mole per micromole (mol µmol-1).
MOL_PER_UMOL = 1.0e-6

#: Mole fraction of O2 in dry air (mol mol-1). U.S. Standard Atmosphere (1976), Table 3 (0.209476);
#: the value pyrealm/rpmodel use (k_co = 209476 ppm).
O2_MOLE_FRACTION = 0.209476

#: CO2 compensation point in the absence of dark respiration Γ* at 25 °C, as a mole fraction (mol mol-1).
#: Bernacchi et al. (2001) Plant Cell Environ. 24:253, Table 1: 42.75 µmol mol-1.
BERNACCHI_GAMMA_STAR_25 = 42.75e-6

#: Michaelis constant of Rubisco for CO2 K_c at 25 °C (mol mol-1). Bernacchi et al. (2001), Table 1: 404.9 µmol mol-1.
BERNACCHI_KC_25 = 404.9e-6

#: Michaelis constant of Rubisco for O2 K_o at 25 °C (mol mol-1). Bernacchi et al. (2001), Table 1: 278.4 mmol mol-1.
BERNACCHI_KO_25 = 278.4e-3

#: Activation energy of Γ* (J mol-1). Bernacchi et al. (2001), Table 1: 37.83 kJ mol-1.
BERNACCHI_HA_GAMMA_STAR = 37830.0

#: Activation energy of K_c (J mol-1). Bernacchi et al. (2001), Table 1: 79.43 kJ mol-1.
BERNACCHI_HA_KC = 79430.0

#: Activation energy of K_o (J mol-1). Bernacchi et al. (2001), Table 1: 36.38 kJ mol-1.
BERNACCHI_HA_KO = 36380.0

# --- Unit conversions (appended by process_models/water.py and soil_respiration.py) -------------

#: Pascal per kilopascal (Pa kPa-1); FAO-56 writes pressures in kPa, `Met.patm` is in Pa.
PA_PER_KPA = 1000.0

#: Hectopascal per kilopascal (hPa kPa-1): e° (FAO-56 eq. 11) is in kPa, VPD is carried in hPa. The one
#: kPa → hPa factor of kgml.
HPA_PER_KPA = PA_PER_KPA / PA_PER_HPA

#: Square centimetres per square metre (cm2 m-2); DAMM rates are per cm3 of soil.
CM2_PER_M2 = 1.0e4

#: Grams per milligram (g mg-1).
G_PER_MG = 1.0e-3
