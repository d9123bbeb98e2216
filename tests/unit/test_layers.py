"""The package's layers: each module imports only from its own layer or the ones below it, and the
config layer loads without torch (so a refused config costs no torch import)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mdn_experiments

PACKAGE = Path(mdn_experiments.__file__).parent
# lowest first; a module may import from its own layer and any layer before it
LAYERS = [
    ("errors", "files", "memory", "config"),
    ("mdn", "serve"),  # the mixture maths: torch's for training, numpy's for every answer
    ("models",),
    ("evaluation", "datasets"),
    ("train",),
    ("figures",),
    ("run",),
    ("search",),
    ("tools", "estimator"),
    ("cli", "__init__"),
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__") if name.endswith(".__init__") and name.count(".") > 1 else name] = path
    return out


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mdn_experiments"):
            found.add(node.module if node.module != "mdn_experiments" else f"mdn_experiments.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mdn_experiments"))
    return found


def test_every_module_imports_downward_only():
    wrong = []
    for module, path in modules().items():
        if module == "mdn_experiments.__init__" or module == "mdn_experiments":
            continue  # the lazy public API names every layer by design
        for imported in project_imports(path):
            if imported == "mdn_experiments":
                continue
            if layer_of(imported) > layer_of(module):
                wrong.append(f"{module} -> {imported}")
    assert wrong == []


def test_the_config_layer_loads_without_torch():
    code = (
        "import sys, mdn_experiments.config, mdn_experiments.config.safety, mdn_experiments.evaluation.contract, "
        "mdn_experiments.cli; print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_predictor_loads_without_torch():
    """mdn-predict and the serve package (an exported model's path) import neither torch nor the
    training code: the serve extra (numpy, onnxruntime) is all they need."""
    code = (
        "import sys, mdn_experiments.serve, mdn_experiments.tools.predict, mdn_experiments.datasets.reading; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('mdn_experiments.models', "
        "'mdn_experiments.train', 'mdn_experiments.mdn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_figures_take_arrays():
    """No figure module imports a dataset, a network or torch: each draws arrays handed to it (a run's,
    through run.figures, or a notebook's)."""
    wrong = []
    for module, path in modules().items():
        if not module.startswith("mdn_experiments.figures"):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        wrong += [
            f"{module} -> {name}"
            for name in names
            if name.split(".")[0] == "torch"
            or name.startswith(
                ("mdn_experiments.datasets", "mdn_experiments.models", "mdn_experiments.mdn", "mdn_experiments.train")
            )
        ]
    assert wrong == []
