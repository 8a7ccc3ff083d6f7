"""`python -m confero` is the `confero` command."""

import sys

from confero.cli import main

sys.exit(main())
