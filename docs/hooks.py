"""mkdocs hooks: pages that are produced from the code, never copied by hand.

- `<!-- metrics -->` becomes the table of every metrics.json key and what it means
  (mdn_experiments.evaluation.contract.METRICS);
- `<!-- modules -->` becomes the table of the package's modules: lines, and which project
  modules each imports.
"""

from __future__ import annotations

import ast
from pathlib import Path


def _metrics_table() -> str:
    from mdn_experiments.evaluation import contract

    rows = ["| rule | meaning |", "|---|---|"]
    rows += [f"| `{rule}` | {meaning} |" for rule, meaning in contract.RULES.items()]
    rows += ["", "| key | meaning |", "|---|---|"]
    rows += [f"| `{key}` | {meaning} |" for key, meaning in contract.METRICS.items()]
    rows += [
        "",
        "Keys of older run folders, read back under today's names by every tool:",
        "",
        "| before | now |",
        "|---|---|",
    ]
    rows += [f"| `{old}` | `{new}` |" for old, new in contract.RENAMED.items()]
    return "\n".join(rows)


def _modules_table() -> str:
    import mdn_experiments

    package = Path(mdn_experiments.__file__).parent
    rows = ["| module | lines | imports from the project |", "|---|---|---|"]
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        imports = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mdn_experiments"):
                imports.add(
                    node.module.removeprefix("mdn_experiments.").removeprefix("mdn_experiments")
                    or ", ".join(alias.name for alias in node.names)
                )
        lines = len(path.read_text().splitlines())
        rows.append(f"| `{name}` | {lines} | {', '.join(sorted(imports)) or '—'} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    if "<!-- metrics -->" in markdown:
        markdown = markdown.replace("<!-- metrics -->", _metrics_table())
    if "<!-- modules -->" in markdown:
        markdown = markdown.replace("<!-- modules -->", _modules_table())
    return markdown
