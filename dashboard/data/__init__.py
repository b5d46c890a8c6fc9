"""Cached calls into ``profiler.analysis``: the dashboard's only import of ``profiler``.

- :mod:`dashboard.data.runs`: which runs lie under the trace root, their files and metadata.
- :mod:`dashboard.data.cache`: per-file caching, keyed by path, size and mtime.
- one module per page's data (:mod:`~dashboard.data.overview`, :mod:`~dashboard.data.tables`,
  :mod:`~dashboard.data.memory`...), each pooling per-file results over a run's files.
"""
