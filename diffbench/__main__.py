"""``python -m diffbench ...`` is ``diffbench ...``."""

import sys

from diffbench.cli import main

sys.exit(main())
