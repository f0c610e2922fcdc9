"""`python -m flowengine ...`: the same as the `flowengine` command."""

import sys

from .cli import main

sys.exit(main())
