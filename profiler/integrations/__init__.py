"""Callbacks that profile a framework's own training loop, capture-side like ``profile``.

- :mod:`profiler.integrations.lightning`: ``TrainprofCallback`` for ``lightning.pytorch.Trainer``
  (``pip install 'trainprof[lightning]'``);
- :mod:`profiler.integrations.huggingface`: ``TrainprofCallback`` for ``transformers.Trainer``
  (``pip install 'trainprof[huggingface]'``).

This package imports nothing itself: each module imports its framework when it is imported, and
says which extra to install when the framework is missing.
"""
