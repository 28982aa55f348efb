"""Study fluxnet_regions: `python experiments/fluxnet_regions/run.py [--data-dir DIR] [--quick] [--out DIR]` writes runs/fluxnet_regions/.

Thin script: the config is experiments/fluxnet_regions/config.toml; the logic is `kgml.compare.studies.run_study`.
"""

import sys

from kgml.compare.studies import main

if __name__ == "__main__":
    sys.exit(main("fluxnet_regions"))
