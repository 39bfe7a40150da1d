"""Arguments more than one command takes, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

ModelArg = Annotated[str, typer.Argument(help="Model directory or hub id (GPT-2 or clidep).")]
