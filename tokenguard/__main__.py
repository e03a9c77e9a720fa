"""``python -m tokenguard``: the same command as ``tokenguard`` (see :mod:`tokenguard.cli`)."""

import sys

from .cli import main

sys.exit(main())
