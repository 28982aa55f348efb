"""Study midwest_states: `python experiments/midwest_states/run.py [--data-dir DIR] [--quick] [--out DIR]` writes runs/midwest_states/.

Thin script: the config is experiments/midwest_states/config.toml; the logic is `kgml.compare.studies.run_study`.
"""

import sys

from kgml.compare.studies import main

if __name__ == "__main__":
    sys.exit(main("midwest_states"))
