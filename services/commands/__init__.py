"""The ``vimbiso-state`` commands, one small module each; ``services.cli`` wires them up."""
