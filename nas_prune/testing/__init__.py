"""Shared test suites that every extension runs through (see STYLE.md section 5).

* :mod:`nas_prune.testing.seed_suite`: the seed-method conformance checks and their tiny fixtures.

Import the submodule you need; this package imports nothing heavy on its own.
"""

from __future__ import annotations
