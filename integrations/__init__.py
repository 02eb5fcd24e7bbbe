"""Adapters that let existing bots run on this library without rewriting their flows."""
