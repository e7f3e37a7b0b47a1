"""Placeholder until these commands land."""

from __future__ import annotations

from ..errors import UserError


def add_report_arguments(p):
    p.add_argument("rest", nargs="*")


def run_report(args):
    raise UserError("report: not implemented yet")


def add_rethink_arguments(p):
    p.add_argument("rest", nargs="*")


def run_rethink(args):
    raise UserError("rethink: not implemented yet")
