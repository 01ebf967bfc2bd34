"""The package's layers: every import inside ``explainer`` points down the stack, and the backend never imports gradio.

paths -> diffusion (pure math) -> render (pixels, figures) -> model -> accel -> quality -> views -> the CLI.
A module may import from its own layer and from any layer below it, never from one above.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "explainer"
LAYERS = ["paths", "diffusion", "render", "model", "accel", "quality", "views", "server", "__main__"]


def layer_of(module: str) -> int:
    """Rank of a dotted module name under explainer (``explainer.model.unet`` -> model's rank)."""
    parts = module.split(".")
    assert parts[0] == "explainer", module
    if len(parts) == 1:
        return len(LAYERS)  # the package itself: nothing imports it
    return LAYERS.index(parts[1])


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of module ``name``."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                found.append((node.lineno, node.module or ""))
                continue
            target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: each name is a module of that package
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def upward_imports(source: str, name: str, is_package: bool = False) -> list[str]:
    """What ``source`` (module ``name``) imports against the rule, one line of explanation each."""
    own = layer_of(name)
    bad = []
    for line, target in imported_modules(source, name, is_package):
        root = target.split(".")[0]
        if root in ("gradio", "gradio_client"):
            bad.append(f"line {line}: imports {target}; the backend never imports gradio")
        elif root == "explainer" and target != "explainer" and layer_of(target) > own:
            bad.append(f"line {line}: imports {target} (layer {LAYERS[layer_of(target)]}) from layer {LAYERS[own]}")
    return bad


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    for p in MODULES:
        name = module_name(p)
        if name != "explainer":
            layer_of(name)  # raises for a module outside the known layers


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    name = module_name(path)
    if name != "explainer":
        assert upward_imports(path.read_text(), name, path.name == "__init__.py") == [], name


@pytest.mark.parametrize("source", ["from ..views.inputs import check_int\n", "from .. import views\n",
                                    "import explainer.model.unet\n", "import gradio as gr\n"])
def test_the_checker_sees_an_upward_import(source):
    """The rule can fail: the diffusion layer importing views, the model layer or gradio is reported."""
    assert len(upward_imports(source, "explainer.diffusion.samplers")) == 1


def test_the_checker_allows_downward_imports():
    src = "from ..diffusion.respacing import make_chain\nfrom . import display\nimport numpy\n"
    assert upward_imports(src, "explainer.render.figures") == []
