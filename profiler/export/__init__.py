"""Views over analysis results: the terminal report (and, later, the TensorBoard export)."""
