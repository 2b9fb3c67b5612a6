"""`python -m dynoyard`: the operator CLI."""

import sys

from dynoyard.cli import main

sys.exit(main())
