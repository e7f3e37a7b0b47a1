"""User-facing errors: one line that names the field and the fix; the CLI exits with status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (config, YAML, method name, budget, dataset)."""
