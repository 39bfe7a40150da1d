"""Entry point of the ``clidep`` command.

It sits outside the ``clidep`` package on purpose: importing ``clidep`` registers the model
family with transformers, which loads torch (~2 s). The command defers that to the subcommands
that need a model, so ``clidep --help`` answers at once.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("CLIDEP_LAZY_IMPORT", "1")
    from clidep.cli import main as run

    sys.exit(run())
