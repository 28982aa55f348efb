"""Distribution-shift benchmark: a thin wrapper of ``kgml bench shift`` (see kgml/compare and README.md).

    python benchmarks/shift.py --suite synthetic_shift [--quick] [--models rf,hybrid_global] [--out runs/bench]
"""

import sys

from kgml.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
