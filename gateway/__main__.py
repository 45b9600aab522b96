"""`python -m gateway` is the `tianwang` command."""

import sys

from gateway.cli import main

sys.exit(main())
