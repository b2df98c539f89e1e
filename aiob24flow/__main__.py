"""``python -m aiob24flow``: the command line."""

import sys

from .cli import main

sys.exit(main())
