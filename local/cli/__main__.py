"""`python -m local.cli ...` is `mlops ...`."""
import sys

from local.cli import main

sys.exit(main())
