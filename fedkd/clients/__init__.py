"""``fedkd.clients``: the repository's top-level ``clients/`` folder, under an import name that cannot clash.

The code lives in ``clients/`` at the repository root (the layout the project's users asked for).
A wheel installs that folder as ``fedkd/clients`` (``[tool.setuptools.package-dir]`` in
pyproject.toml), so nothing named ``clients`` lands in site-packages. In a source tree (a checkout,
an editable install, a Flower app bundle) this file stands in for it and points the package's
search path at the folder.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "clients")]  # noqa: F811
