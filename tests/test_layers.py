"""The package layers: bertforge.common < corpora (data side) < pretrain (model side) < bertforge (the top:
every bertforge.* module outside bertforge.common). A module imports its own layer or a lower one, never a
higher one. Checked on the source with `ast`, nothing imported: every import statement counts, also those
inside functions and `if TYPE_CHECKING:` blocks, and `importlib.import_module("...")` with a literal name."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Lowest first; a module's layer is its longest matching prefix, so bertforge.common wins over bertforge.
LAYERS = ["bertforge.common", "corpora", "pretrain", "bertforge"]
PACKAGES = ["bertforge", "corpora", "pretrain"]


def layer_of(module: str) -> int | None:
    """Rank of the layer `module` belongs to (0 is the lowest), or None for a module outside the project."""
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS.index(max(matches, key=len)) if matches else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str, str]]:
    """(line, module named, what it resolves to) for every import in `source`, at any depth, relative ones
    resolved. `from X import a` names X and resolves to X.a: a submodule or a name in X, the same layer
    either way, except that `from bertforge import common` is bertforge.common."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join(parent + ([node.module] if node.module else []))
            found += [(node.lineno, base, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")):
            found.append((node.lineno, node.args[0].value, node.args[0].value))
    return found


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file under the project's packages."""
    return {module_name(path, root): path
            for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}


def upward_imports(root: Path, sources: dict[str, str] | None = None) -> list[str]:
    """`file:line imports module (layer > layer)` for every import of a higher layer. `sources` (module
    name -> source text; a package's name ends in `.__init__`) replaces the files under `root`."""
    modules = project_modules(root)
    if sources is None:
        sources = {name + (".__init__" if path.name == "__init__.py" else ""): path.read_text()
                   for name, path in modules.items()}
    found = set()
    for name, source in sources.items():
        module = name.removesuffix(".__init__")
        importer = layer_of(module)
        is_package = name.endswith(".__init__")
        for line, named, resolved in imported_modules(source, module, is_package):
            target = layer_of(resolved)
            if importer is not None and target is not None and target > importer:
                shown = resolved if resolved in modules else named
                what = f"imports {shown} ({LAYERS[target]} > {LAYERS[importer]})"
                found.add((name.replace(".", "/") + ".py", line, what))
    return [f"{file}:{line} {what}" for file, line, what in sorted(found)]


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(REPO)
    assert not upward, f"{len(upward)} import(s) of a higher layer:\n" + "\n".join(upward)


def test_the_check_catches_an_upward_import_anywhere_in_a_file():
    fake = {  # module name -> source; only the four marked lines import a higher layer
        "corpora.fake": "def build():\n"
                        "    from pretrain.model import x  # up\n"
                        "    return x\n",
        "corpora.sub.__init__": "from typing import TYPE_CHECKING\n"
                                "from .. import documents\n"
                                "if TYPE_CHECKING:\n"
                                "    from bertforge.run import Run  # up\n",
        "bertforge.common.fake": "from .. import common\n"
                                 "from ..common import errors\n"
                                 "from .. import stages  # up\n",
        "pretrain.fake": "import importlib\n"
                         "import corpora.config, bertforge.common.errors\n"
                         "from . import model\n"
                         "def load():\n"
                         "    return importlib.import_module('bertforge.experiment')  # up\n",
        "bertforge.fake": "import corpora, pretrain.config\n"
                          "from .common import errors\n",
    }
    assert upward_imports(REPO, fake) == [
        "bertforge/common/fake.py:3 imports bertforge.stages (bertforge > bertforge.common)",
        "corpora/fake.py:2 imports pretrain.model (pretrain > corpora)",
        "corpora/sub/__init__.py:4 imports bertforge.run (bertforge > corpora)",
        "pretrain/fake.py:5 imports bertforge.experiment (bertforge > pretrain)",
    ]


def test_the_check_reads_every_module_of_the_three_packages():
    modules = project_modules(REPO)
    assert len(modules) > 40
    assert {"corpora.corpus.stage", "corpora.vocab.stage", "pretrain.model", "bertforge.cli",
            "bertforge.common.errors", "corpora", "bertforge.common"} <= set(modules)
    assert {layer_of(name) for name in modules} == set(range(len(LAYERS)))
