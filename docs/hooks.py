"""MkDocs hooks: the generated reference pages and the committed evidence's plots.

* ``reference/config.md`` and ``reference/cli.md`` are generated on every build from the code
  (:mod:`gen_ref`), so they cannot drift from the config's rules or the CLI's parsers.
* The plots under ``reports/`` are served at ``reports/...`` so that the evidence page shows
  them from where the runs committed them (no copies in ``docs/``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _gen_ref():
    spec = importlib.util.spec_from_file_location("gen_ref", HERE / "gen_ref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files, config):
    for rel, text in _gen_ref().pages().items():
        files.append(File.generated(config, rel, content=text))
    for png in sorted((ROOT / "reports").rglob("*.png")):
        files.append(File(png.relative_to(ROOT).as_posix(), src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
