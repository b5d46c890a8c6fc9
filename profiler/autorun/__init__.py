"""``trainprof run``'s capture side: profile an unmodified script from inside its own processes.

The command line (``profiler.launch``) starts the user's command with ``bootstrap/`` first on
``PYTHONPATH`` and the run's settings in ``$TRAINPROF_RUN`` (:mod:`.config`). Every Python
process of the command then runs ``bootstrap/sitecustomize.py`` at start-up, which waits for
torch to be imported (:mod:`.watch`) and then puts the hooks of :mod:`.hooks` in place: a
session starts at the process's first DataLoader batch or optimizer step and is stopped at
exit. A process that never does either (torchrun's agent, DataLoader workers, a compile
worker) writes nothing.

Nothing but the bootstrap and the launcher imports this package (import-linter holds it).
"""
