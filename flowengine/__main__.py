"""`python -m flowengine ...`: the same as the `flowengine` command."""

import sys

from flowengine.cli.main import main

sys.exit(main())
