"""Capture: the context manager, hooks, the Kineto session and samplers. Imports torch."""
