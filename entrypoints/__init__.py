"""Command-line entry points: the `vimbiso-state` CLI and its demo, apart from the library API."""
