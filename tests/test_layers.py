"""The package's layers: every import inside ``explainer`` points down the stack, and only the web app imports gradio.

paths -> diffusion (pure math) -> render (pixels, figures) -> model -> accel -> quality -> views (what each tab
computes) -> server (serving: guard, sessions, launch) -> ui (the Gradio widgets). A module may import from its own
layer and from any layer below it, never from one above. The command line (``explainer/__main__.py``) stands on
views, beside the web app: it imports neither server nor ui, and nothing imports it. Only server and ui import
gradio (or the web framework under it); ``app.py`` only builds the app from ui and serves it with server.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "explainer"
APP = PACKAGE.parent / "app.py"
LAYERS = ["paths", "diffusion", "render", "model", "accel", "quality", "views", "server", "ui"]
CLI = "__main__"
WEB_LAYERS = {"server", "ui"}  # the only layers that import the web framework
WEB_PACKAGES = {"gradio", "gradio_client", "fastapi", "starlette"}


def layer_of(module: str) -> int:
    """Rank of a dotted module name under explainer (``explainer.model.unet`` -> model's rank)."""
    parts = module.split(".")
    assert parts[0] == "explainer", module
    if len(parts) == 1:
        return len(LAYERS)  # the package itself: nothing imports it
    if parts[1] == CLI:
        return LAYERS.index("views") + 0.5  # above views, below server
    return LAYERS.index(parts[1])


def layer_name(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "explainer"


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
    own, own_name = layer_of(name), layer_name(name)
    bad = []
    for line, target in imported_modules(source, name, is_package):
        root = target.split(".")[0]
        if root in WEB_PACKAGES and own_name not in WEB_LAYERS:
            bad.append(f"line {line}: imports {target}; only explainer/ui and explainer/server import the web app's "
                       "framework")
        elif root == "explainer" and target != "explainer" and layer_name(target) == CLI and own_name != CLI:
            bad.append(f"line {line}: imports {target}, the command line; nothing imports it")
        elif root == "explainer" and target != "explainer" and layer_of(target) > own:
            bad.append(f"line {line}: imports {target} (layer {layer_name(target)}) from layer {own_name}")
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


@pytest.mark.parametrize("source,module", [("import gradio as gr\n", "explainer.ui.reverse"),
                                           ("from fastapi.responses import JSONResponse\n", "explainer.server.launch"),
                                           ("from ..server.sessions import session_of\n", "explainer.ui.lab"),
                                           ("from ..views import reverse\n", "explainer.server.launch")])
def test_the_web_layers_import_gradio_and_what_is_below(source, module):
    assert upward_imports(source, module) == []


@pytest.mark.parametrize("source,module", [("from ..ui import build_app\n", "explainer.server.launch"),
                                           ("from .server import launch\n", "explainer.__main__"),
                                           ("import gradio\n", "explainer.__main__"),
                                           ("from starlette.middleware import Middleware\n", "explainer.views.guard"),
                                           ("from .. import __main__\n", "explainer.ui.common")])
def test_the_checker_sees_a_web_import_outside_the_web_layers(source, module):
    """The server never imports the widgets; the command line and the views never import the web app."""
    assert len(upward_imports(source, module)) == 1


def test_app_py_only_builds_the_app_and_serves_it():
    """The entry point stays thin: it imports the app from explainer.ui and serving from explainer.server."""
    source = APP.read_text()
    modules = {m for _, m in imported_modules(source, "app") if m != "__future__"}
    assert modules and all(m.startswith(("explainer.ui", "explainer.server")) for m in modules), modules
    assert len(source.splitlines()) <= 60
