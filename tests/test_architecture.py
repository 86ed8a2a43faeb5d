"""The folder tree is the architecture: every import in the package points down the stack of docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "core" / "jina_local_rerank"

# Bottom to top. A module may import from its own layer and the layers below it; "shared" imports only "shared".
LAYERS = ("shared", "model", "checkpoint", "engine", "api", "applications", "testing")
SHARED = {"errors", "validation", "flags", "install_hints", "progress", "lazy", "files"}
API = {"reranker", "reranker_registry", "ranking", "options", "pydantic_options", ""}
APPLICATIONS = {"cli", "server", "training", "evaluation", "export", "ray"}
# The one import that points up: the docstring reranker stays exported where it was first documented.
EXCEPTIONS = {("training", "testing.docstring_task")}


def layer_of(module: str) -> str:
    """The layer of ``module``, a dotted name inside the package ("" for the package itself)."""
    head = module.split(".")[0]
    if head in SHARED:
        return "shared"
    if head in API:
        return "api"
    if head in APPLICATIONS:
        return "applications"
    if head in ("model", "checkpoint", "engine", "testing"):
        return head
    raise AssertionError(f"{module}: no layer; add it to docs/architecture.md and to this test")


def package_imports() -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of one of the package's modules by another, at any depth
    (function-level imports included), as dotted names inside the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        package = list(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").startswith("jina_local_rerank"):
                    target = node.module.removeprefix("jina_local_rerank").lstrip(".")
                else:
                    continue
                names = [f"{target}.{alias.name}".lstrip(".") for alias in node.names] if not node.module else [target]
                found += [(module, name, node.lineno) for name in names]
            elif isinstance(node, ast.Import):
                found += [
                    (module, alias.name.removeprefix("jina_local_rerank").lstrip("."), node.lineno)
                    for alias in node.names
                    if alias.name.startswith("jina_local_rerank.")
                ]
    return found


def test_every_import_points_down_the_stack():
    imports = package_imports()
    assert len(imports) > 100  # the walk found the package's imports
    upward = []
    for importer, imported, line in imports:
        if imported in ("", "__version__") or any(
            importer.startswith(a) and imported.startswith(b) for a, b in EXCEPTIONS
        ):
            continue
        low, high = LAYERS.index(layer_of(imported)), LAYERS.index(layer_of(importer))
        if low > high or (layer_of(importer) == "shared" and layer_of(imported) != "shared"):
            upward.append(f"{importer} (line {line}) imports {imported}: {layer_of(importer)} -> {layer_of(imported)}")
    assert not upward, "imports that point up the stack:\n" + "\n".join(upward)


def test_the_top_level_keeps_the_public_api_and_what_every_layer_uses():
    modules = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
    assert set(modules) <= SHARED | API, f"top-level modules outside the documented ones: {set(modules) - SHARED - API}"
    assert len(modules) <= 12, modules
    folders = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file())
    assert set(folders) == {"model", "checkpoint", "engine", "files", "testing"} | APPLICATIONS, folders


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.stem not in ("__init__", "__main__")
        and (path.parent == PACKAGE or path.parent.name in ("model", "checkpoint", "engine"))
        and path.name not in page
    ]
    assert not missing, f"modules docs/architecture.md does not place: {missing}"


@pytest.mark.parametrize("package", ["model", "checkpoint", "engine", "files", "testing"])
def test_importing_a_layer_package_loads_no_torch(package: str):
    code = f"import sys, jina_local_rerank.{package}; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
