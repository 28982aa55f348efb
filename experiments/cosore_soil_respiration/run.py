"""Study cosore_soil_respiration: `python experiments/cosore_soil_respiration/run.py [--data-dir DIR] [--quick] [--out DIR]` writes runs/cosore_soil_respiration/.

Thin script: the config is experiments/cosore_soil_respiration/config.toml; the logic is `kgml.compare.studies.run_study`.
"""

import sys

from kgml.compare.studies import main

if __name__ == "__main__":
    sys.exit(main("cosore_soil_respiration"))
