"""``python -m tgrs_agents.cli``: the same as ``tgrs``."""

import sys

from . import main

sys.exit(main())
