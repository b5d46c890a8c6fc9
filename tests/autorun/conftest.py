"""The capture tests' check that every trace written nests (tests/capture/conftest.py)."""

from tests.capture.conftest import traces_nest

__all__ = ["traces_nest"]
