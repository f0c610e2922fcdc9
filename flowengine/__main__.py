"""`python -m flowengine ...`: the same as the `flowengine` command."""

import sys

from flowengine.cli.entry import main

sys.exit(main())
