"""The package contract: import guards, a light import, the optional-dependency message, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ssmkit
from ssmkit.__main__ import main
from ssmkit.core.optional import require

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["core", "kernels", "vision", "audio", "timeseries", "rl", "bio"]

# Imports every subpackage and every registered model's module while every third-party package
# except torch and einops is made unimportable: `import ssmkit` must need nothing else.
_LIGHT_IMPORT = """
import importlib, importlib.abc, sys
import torch, einops  # what a core install has; everything else third-party is blocked below
LOADED = {m.split(".")[0] for m in sys.modules}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in LOADED or top == "ssmkit" or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"blocked third-party import {name}", name=name)
sys.meta_path.insert(0, Block())
import ssmkit, ssmkit.core, ssmkit.kernels
for d in ("vision", "audio", "timeseries", "rl", "bio"):
    importlib.import_module("ssmkit." + d)
assert "triton" not in sys.modules, "importing ssmkit imported triton"
print(len(ssmkit.list_models()))
"""


def test_import_needs_only_torch_and_einops() -> None:
    result = subprocess.run([sys.executable, "-c", _LIGHT_IMPORT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_bare_subpackage_import_is_refused(subpackage: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {subpackage}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f"ssmkit.{subpackage}" in result.stderr


def test_require_names_the_extra() -> None:
    assert require("json", "core").dumps([1]) == "[1]"
    with pytest.raises(ImportError, match=r'pip install "ssmkit\[vision\]"'):
        require("surely_not_an_installed_package_xyz", "vision")


def test_root_files_are_only_init_and_main() -> None:
    py_files = sorted(p.name for p in REPO_ROOT.glob("*.py"))
    assert py_files == ["__init__.py", "__main__.py"]


def test_cli_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert ssmkit.__version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "bench" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_cli_models_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-params"]) == 0
    out = capsys.readouterr().out
    for name in ssmkit.list_models():
        assert name in out


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ssmkit", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and ssmkit.__version__ in result.stdout


def test_unknown_benchmark_is_explained() -> None:
    with pytest.raises(SystemExit, match="Unknown benchmark"):
        main(["bench", "no-such-benchmark"])
