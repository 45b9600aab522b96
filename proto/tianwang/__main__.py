"""`python -m tianwang` is the `tianwang` command."""

import sys

from tianwang.gateway.cli.main import main

sys.exit(main())
