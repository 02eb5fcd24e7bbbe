"""The ``vimbiso-state`` commands, one small module each; ``entrypoints.cli`` wires them up."""
