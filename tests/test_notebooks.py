"""The notebooks are stored clean and execute top to bottom, with small parameters, drawing their figures.

Each notebook's cell tagged "parameters" is replaced by a shrunken one (the same names, smaller sizes) and
the notebook runs in a fresh kernel, in a temporary working folder, with ``GENOFORMER_ROOT`` pointing at
this checkout. The kernel is this interpreter (``sys.executable``) through a kernelspec written into the
temporary folder, so nothing is registered globally and no other Python's packages are picked up.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# notebook -> (parameter cell used by the test, least number of PNG figures the run must produce)
SMALL = {
    "01_explore_genome.ipynb": (
        "WINDOW = 100_000\nKMER = 4\nSHOW_BASES = 24\n",
        3,
    ),
    "02_inside_lsh_attention.ipynb": (
        "WINDOW = 256\nN_HASHES = 2\nCHUNK = 32\nLENGTHS = [256, 1024]\nFULL_MAX_LENGTH = 1024\nREPEATS = 1\n",
        2,
    ),
    "03_gene_region_tagging.ipynb": (
        "USE_PIPELINE_MODEL = False\nTOKENIZER = \"kmer3\"\nTRAIN_STEPS = 3\nWINDOW = 256\nBATCH_SIZE = 2\n"
        "TRAIN_BASES = 20_000\n"
        "REGION_START = 4_100_000\nREGION_LENGTH = 3_000\n",
        2,
    ),
}
CELL_TIMEOUT_S = 120


def _require(module: str):
    """Import a notebook-running dependency, failing (not skipping) with the fix when it is missing."""
    try:
        return __import__(module)
    except ImportError as exc:
        pytest.fail(f"running the notebooks needs {module!r} ({exc}); install the dev extras: pip install -e '.[dev]'")


def _read(path: Path):
    nbformat = _require("nbformat")
    if not path.is_file():
        pytest.fail(f"notebook missing: {path}")
    return nbformat.read(path, as_version=4)


def _assigned_names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _parameter_cell(nb):
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged 'parameters'"
    assert tagged[0] is code[0], "the parameter cell must be the first code cell"
    return tagged[0]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_stored_without_outputs(name):
    nb = _read(NOTEBOOKS / name)
    _require("nbformat").validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"stored output in: {cell.source[:60]!r}"
    # The test's parameters must set the same names the notebook does, or a renamed parameter would be ignored.
    assert _assigned_names(_parameter_cell(nb).source) == _assigned_names(SMALL[name][0])


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """Kernel managers whose only kernelspec, "python3", runs this interpreter."""
    _require("ipykernel")
    _require("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "python3").mkdir()
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "genoformer test kernel", "language": "python"}
    (kernels / "python3" / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable
    return lambda: AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_executes_and_draws(name, kernel_manager_factory, tmp_path):
    nbclient = _require("nbclient")
    _require("matplotlib")
    nb = _read(NOTEBOOKS / name)
    parameters, min_figures = SMALL[name]
    _parameter_cell(nb).source = parameters

    env = dict(os.environ)  # carries GENOFORMER_CACHE (the session's private cache, see conftest)
    env["GENOFORMER_ROOT"] = str(REPO)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("MPLBACKEND", None)  # the notebooks draw with the inline backend
    client = nbclient.NotebookClient(nb, km=kernel_manager_factory(), kernel_name="python3",
                                     timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as exc:  # the message holds the cell and its traceback
        pytest.fail(f"{name} failed:\n{exc}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as exc:
        pytest.fail(f"{name}: a cell ran longer than {CELL_TIMEOUT_S} s with the test's small parameters:\n{exc}",
                    pytrace=False)

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    figures = sum("image/png" in out.get("data", {}) for out in outputs)
    assert figures >= min_figures, f"{name} drew {figures} PNG figures, expected at least {min_figures}"
