"""Bridges to other libraries, each behind its own extra (imported lazily; a missing extra raises
:class:`~perceptra_seg.exceptions.ConfigError` with the install line)."""
