"""pyproject.toml lists every package folder: an editable install finds an unlisted one on the path, a
wheel (`pip install .`) silently leaves it out."""

import tomllib

from tests.conftest import REPO


def test_every_package_folder_is_listed_and_has_an_init():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("bertforge", "corpora", "pretrain"):
        for folder in [REPO / top, *(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if any(folder.glob("*.py")):
                assert (folder / "__init__.py").exists(), f"{folder} holds modules but no __init__.py"
                found.add(".".join(folder.relative_to(REPO).parts))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"bertforge_conf"}
