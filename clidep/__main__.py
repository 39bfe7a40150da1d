"""``python -m clidep`` (and ``accelerate launch -m clidep``) run the same CLI as ``clidep``."""

import sys

from clidep.app import main

sys.exit(main())
