"""A package for ``python -m trainpkg.fit``."""
