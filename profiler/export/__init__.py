"""Views over analysis results: the terminal report and the TensorBoard export."""
