"""Figure builders: analysis results in, ``plotly.graph_objects.Figure`` out; no I/O."""
