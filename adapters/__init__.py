"""Backends behind the domain's ports: in-memory and Redis."""
