"""Placeholder entry point until the experiment pipeline lands; see experiments/demo.py."""

from experiments.demo import main

__all__ = ["main"]
