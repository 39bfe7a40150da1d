"""What clidep knows of the machines a model runs on, below both compress and bench: device profiles
(``devices``, from the TOML files in ``clidep/devices/``), the probe of this host (``host``), the
quantisers' block sizes the kernels were measured at (``kernels``), and the ssh transport to a remote
device (``transport``)."""
