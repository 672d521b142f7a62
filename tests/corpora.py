"""Third-party test corpora, read where they live (``../shared/corpora``), never copied.

``shared_corpus(name, variable, what)`` returns the directory named by the environment
variable, else ``../shared/corpora/<name>`` beside the checkout. Where neither exists the
calling test module is reported as not run, in one line naming the variable; a variable
that names no directory is a mistake and fails collection.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def shared_corpus(name: str, variable: str, what: str) -> Path:
    """The corpus directory, or a module-level skip saying how to provide it."""
    configured = os.environ.get(variable)
    if configured:
        if not Path(configured).is_dir():
            # Asked for and missing is a mistake, not an absence: one collection error.
            pytest.fail(f"{variable}={configured} is not a directory", pytrace=False)
        return Path(configured)
    shared = SHARED / name
    if not shared.is_dir():
        pytest.skip(
            f"{name} corpus not found: set {variable}=<{what}> "
            f"(tests read it from ../shared/corpora/{name})",
            allow_module_level=True,
        )
    return shared
