"""The trainprof dashboard (Dash). Reads trace files through profiler.analysis only."""
