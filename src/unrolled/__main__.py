"""``python -m unrolled`` (and ``torchrun -m unrolled``): the command-line interface."""

import sys

from unrolled.cli import main

sys.exit(main())
