"""``python -m clidep`` (and ``accelerate launch -m clidep``) run the same CLI as ``clidep``."""

from .cli import main

main()
