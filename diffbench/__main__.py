"""``python -m diffbench ...`` is ``diffbench ...``."""

import sys

from diffbench.bench.cli import main

sys.exit(main())
