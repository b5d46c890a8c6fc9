"""The directory ``trainprof run`` puts on ``PYTHONPATH``: only ``sitecustomize.py`` matters.

A package so that it ships with trainprof; Python imports ``sitecustomize`` from it as a
top-level module, never this package.
"""
