"""`python -m prunerlib`: the `prunerlib` command."""

import sys

from prunerlib.cli import main

sys.exit(main())
