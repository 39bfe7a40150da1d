"""Every error type clidep raises, in one place. Each that a user can cause is a ``ClidepError``: the command
line prints it on one line and exits with status 2."""


class ClidepError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do.

    The CLI prints ``str(error)`` on one line to stderr and exits with status 2; library callers
    can catch it like any other exception.
    """


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the run is so that its cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class OutputClosed(Exception):
    """Standard output's reader went away (``| head``, ``| true``) before clidep finished printing.

    Not an OSError, so that click's own broken-pipe handling (a silent exit 1) never sees it; the command line
    says so in one line on stderr and exits as a process killed by SIGPIPE would (141)."""


class Unavailable(ClidepError):
    """A tool clidep drives (llama.cpp) cannot be built or run here; the message says why and what to do."""


class NoMatrixOfType(ClidepError):
    """A quantised GGUF file would hold none of its own type's matrices: llama-quantize kept every weight matrix
    in a float or wider type because no row splits into the type's blocks. Callers that try one Q4 type and fall
    back catch this alone, so that every other refusal still stops them."""


class ValidationError(ClidepError):
    """An exported file does not behave like the model it came from (export's checks, optimum's
    ``validate_model_outputs`` in spirit): the subclasses say which check failed, cheapest first."""


class NamesMismatch(ValidationError):
    """The graph's inputs or outputs are not the ones the model's export declares."""


class ShapeMismatch(ValidationError):
    """An output has another shape than PyTorch's."""


class ValueMismatch(ValidationError):
    """Logits, greedy tokens or perplexity beyond their gate."""


class TokenizerMismatch(ValidationError):
    """A runtime's tokenizer (llama.cpp's) does not split text as transformers' does."""
