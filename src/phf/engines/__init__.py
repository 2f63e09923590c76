"""Engines that run corpus preparation past one machine (Ray). Nothing here is imported
by `phf score` or `phf train` unless the user asks for an engine: Ray is an optional
dependency (`pip install "phf[ray]"`)."""
