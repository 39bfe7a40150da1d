"""``python -m clidep`` (and ``accelerate launch -m clidep``) run the same CLI as ``clidep``."""

import sys

from .cli import main

sys.exit(main())
