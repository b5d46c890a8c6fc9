"""Analysis: trace files in, tables and findings out. Pandas only: no plotting, no torch."""
