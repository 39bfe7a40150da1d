"""The one exception type the command line turns into a one-line message."""


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

    Not an OSError, so that click's own broken-pipe handling (a silent exit 1) never sees it; the CLI
    says so in one line on stderr and exits as a process killed by SIGPIPE would (141)."""
