"""``python -m fikitctl``: the same as the console script."""

import sys

from .main import main

sys.exit(main())
