"""`python -m aggapi.devcluster`."""

import sys

from aggapi.devcluster.cli import main

sys.exit(main())
