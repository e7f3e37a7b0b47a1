"""Placeholder until these commands land."""

from __future__ import annotations

from ..errors import UserError


def add_search_arguments(p):
    p.add_argument("rest", nargs="*")


def run_search(args):
    raise UserError("search: not implemented yet")


def add_worker_arguments(p):
    p.add_argument("rest", nargs="*")


def run_worker(args):
    raise UserError("worker: not implemented yet")


def add_export_arguments(p):
    p.add_argument("rest", nargs="*")


def run_export(args):
    raise UserError("export: not implemented yet")
