"""``python -m jobs.cli``: the ``mediascore`` command."""

import sys

from jobs.cli import main

sys.exit(main())
