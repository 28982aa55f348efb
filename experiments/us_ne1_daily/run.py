"""Study us_ne1_daily: `python experiments/us_ne1_daily/run.py [--data-dir DIR] [--quick] [--out DIR]` writes runs/us_ne1_daily/.

Thin script: the config is experiments/us_ne1_daily/config.toml; the logic is `kgml.compare.studies.run_study`.
"""

import sys

from kgml.compare.studies import main

if __name__ == "__main__":
    sys.exit(main("us_ne1_daily"))
