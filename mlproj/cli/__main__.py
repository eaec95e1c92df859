"""`python -m mlproj.cli`: the `mlproj` command."""

import sys

from mlproj.cli import main

sys.exit(main())
