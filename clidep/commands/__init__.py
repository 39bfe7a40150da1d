"""One module per command, each reading as its steps and calling the domain packages below it
(compress, export, bench, quality, runtime), which know nothing of commands: ``compress``, ``export``,
``bench``, ``analyze``, ``eval``, ``generate``, ``devices``, ``demo``. ``clidep.app`` maps the command line
onto them."""
