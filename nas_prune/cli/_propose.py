"""Placeholder until these commands land."""

from __future__ import annotations

from ..errors import UserError


def add_propose_arguments(p):
    p.add_argument("rest", nargs="*")


def run_propose(args):
    raise UserError("propose: not implemented yet")


def add_methods_arguments(p):
    p.add_argument("rest", nargs="*")


def run_methods(args):
    raise UserError("methods: not implemented yet")
