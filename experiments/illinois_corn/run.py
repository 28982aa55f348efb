"""Study illinois_corn: `python experiments/illinois_corn/run.py [--data-dir DIR] [--quick] [--out DIR]` writes runs/illinois_corn/.

Thin script: the config is experiments/illinois_corn/config.toml; the logic is `kgml.compare.studies.run_study`.
"""

import sys

from kgml.compare.studies import main

if __name__ == "__main__":
    sys.exit(main("illinois_corn"))
