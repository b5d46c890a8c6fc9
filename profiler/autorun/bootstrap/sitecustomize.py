"""trainprof's bootstrap, run by Python at start-up in every process ``trainprof run`` starts.

``trainprof run`` puts this directory first on ``PYTHONPATH``, so Python imports this file as
``sitecustomize``. It does nothing unless ``$TRAINPROF_RUN`` is set; then it asks
:mod:`profiler.autorun.watch` to profile the process once torch is imported. It never raises:
a failure is one line on stderr and the script runs unprofiled. It takes this directory off
``sys.path`` again, and runs the ``sitecustomize`` it shadows, if there is one further down.
"""

import os
import sys


def _trainprof_bootstrap() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if os.environ.get("TRAINPROF_RUN"):
        try:
            from profiler.autorun.watch import watch_from_env

            watch_from_env()
        except Exception as exc:  # the script runs unprofiled, never broken by us
            sys.stderr.write(
                f"trainprof: not profiling this process: {type(exc).__name__}: {exc}\n"
            )
    try:
        import importlib.machinery
        import importlib.util

        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
        if spec is not None and spec.loader is not None:  # the one ours shadows
            module = importlib.util.module_from_spec(spec)
            sys.modules["sitecustomize"] = module
            spec.loader.exec_module(module)
    except Exception as exc:  # what site.py does with a failing sitecustomize: tell, go on
        sys.stderr.write(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{exc!r}\n")


_trainprof_bootstrap()
del _trainprof_bootstrap
