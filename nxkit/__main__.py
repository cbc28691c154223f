"""`python -m nxkit ...` (what `torchrun ... -m nxkit collect ...` starts in every rank): the `nxkit` command."""

import sys

from .cli import main

sys.exit(main())
