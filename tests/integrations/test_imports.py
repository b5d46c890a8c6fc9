"""The integrations load their framework only when imported, and say how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.capture.helpers import CHILD_TIMEOUT_S, ROOT


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def test_the_package_imports_no_framework() -> None:
    result = python(
        "import sys, profiler.integrations\n"
        "print(sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [("lightning", "lightning", "lightning"), ("huggingface", "transformers", "huggingface")],
)
def test_a_missing_framework_names_the_extra(module: str, framework: str, extra: str) -> None:
    result = python(
        f"import sys; sys.modules[{framework!r}] = None\n"  # as if it were not installed
        f"import profiler.integrations.{module}"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: profiler.integrations.")
    assert last.endswith(f"pip install 'trainprof[{extra}]'"), last
