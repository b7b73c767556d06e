"""`python -m huddle` is the `huddle` console script."""

import sys

from huddle.cli import main

sys.exit(main())
