"""EvalConfig: the settings of ``clidep eval``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.options import Options, flag, option


@dataclass(frozen=True)
class EvalConfig(Options):
    """The sliding-window protocol and the text it scores."""

    data: str = option(
        "wikitext-test", "wikitext-test (offline), wikitext-test-raw, wikitext-103 (hub) or a text file."
    )
    context: int | None = option(None, "Window length in tokens (default: the model's positions).", low=2)
    stride: int | None = option(None, "Tokens between window starts (default: context / 2).", low=1)
    batch_size: int = option(4, "Windows per forward pass.", low=1)
    max_tokens: int | None = option(None, "Score only the first N tokens of the text (quick checks).", low=1)
    tasks: tuple[str, ...] | None = option(
        None,
        "lm-evaluation-harness tasks to run on an export instead of perplexity, comma-separated: the harness's "
        "own (the hub), clidep_lastword or clidep_wikitext (offline), or task YAML files.",
        items=str,
    )
    limit: int | None = option(None, "--tasks: only the first N documents of each task (quick checks).", low=1)

    def check(self) -> None:
        # --tasks reads its own documents: the sliding-window settings would be silently unused there
        if self.tasks:
            unused = [f for f in ("data", "context", "stride", "max_tokens") if self.given(f)]
            if unused:
                raise ClidepError(f"{flag(unused[0])} sets the perplexity text; --tasks reads its tasks' own documents")
        elif self.given("limit"):
            raise ClidepError("--limit applies to --tasks only")
