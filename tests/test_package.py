"""The package contract: import guards, a light import, the optional-dependency message, the CLI."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ssmkit
from ssmkit.__main__ import main
from ssmkit.core.optional import require

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["core", "kernels", "vision", "audio", "timeseries", "rl", "bio"]


def _minimal_site(target: Path) -> Path:
    """A site dir holding only torch, einops, what they require (triton excluded) and ssmkit."""
    seen: set[str] = set()
    todo = ["torch", "einops"]
    while todo:
        name = todo.pop()
        if name in seen or name == "triton":
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [
            re.split(r"[ ;<>=!~\\[(]", r)[0] for r in dist.requires or [] if "extra ==" not in r
        ]
        for file in dist.files or []:
            top = Path(str(file)).parts[0]
            source = Path(str(dist.locate_file(top)))
            link = target / top
            if top not in ("..", "bin") and source.exists() and not link.exists():
                link.symlink_to(source)
    (target / "ssmkit").symlink_to(REPO_ROOT)
    return target


def test_import_needs_only_torch_and_einops(tmp_path: Path) -> None:
    site = _minimal_site(tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import importlib, ssmkit, ssmkit.core, ssmkit.kernels; "
        "[importlib.import_module('ssmkit.' + d) for d in ('vision', 'audio', 'timeseries', 'rl', 'bio')]; "
        "ssmkit.list_models(); assert 'triton' not in sys.modules, 'triton was imported'; "
        "import timm"
    )
    # -S: no site-packages, so only the minimal site is importable; the final `import timm` proves it.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert "No module named 'timm'" in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("Traceback") == 1, result.stderr[-3000:]


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
