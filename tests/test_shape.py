"""The code's shape: methods describe themselves (no code outside ``audit.methods`` names one), and the
command line starts without the heavy libraries."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import audit
from audit.methods import REGISTRY, get_method
from audit.report import plots

SOURCE = Path(audit.__file__).parent


def test_no_code_outside_methods_names_a_method():
    names = set(REGISTRY)
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] in ("methods", "testing"):
            continue
        tree = ast.parse(path.read_text())
        # scipy's dist="norm" is the normal distribution, not the method
        distributions = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "dist"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in distributions:
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert not found, "method names outside audit.methods: " + ", ".join(found)


def test_attn_std_describes_its_result():
    details = {"per_projection": {"attn.q": 0.5, "attn.k": -0.25, "attn.v": 1.0, "attn.o": 0.125},
               "profiles": {"A": [[1.0, 2.0]] * 4, "B": [[3.0, 4.0]] * 4}}
    method = get_method("attn-std")
    assert method.detail(details) == "r per projection: q 0.500, k -0.250, v 1.000, o 0.125"
    (figure,) = method.figures(details)
    assert figure.per_model and figure.data["profiles_b"] == {p: [3.0, 4.0] for p in "qkvo"}
    assert getattr(plots, figure.plot) is plots.layer_profiles
    assert get_method("attn-std-detrended").figures(details) == []  # the same profiles are not drawn twice


def test_matching_methods_name_the_best_blocks_only_for_moe():
    layers = [{"pairs_compared": 1, "log10_pvalue": -3.0}, {"pairs_compared": 1, "log10_pvalue": -1.5}]
    method = get_method("neuron-match")
    assert method.detail({"layers": layers, "most_frequent_best_pair": ["mlp", "mlp"]}) is None
    moe = [dict(layer, pairs_compared=4) for layer in layers]
    assert method.detail({"layers": moe, "most_frequent_best_pair": ["expert.1", "expert.3"]}).startswith(
        "best-matching MLP blocks (most layers): A expert.1 ~ B expert.3")
    (figure,) = method.figures({"layers": layers})
    assert figure.plot == "layer_evidence" and figure.data == {"log10_pvalues": [-3.0, -1.5]}


def test_method_flags_the_report_reads():
    assert {name for name, cls in REGISTRY.items() if cls.population_heatmap} == {"attn-std", "pcs"}
    assert {name for name, cls in REGISTRY.items() if cls.reads_embeddings} == {"robust-match"}
    assert {name for name, cls in REGISTRY.items() if cls.tunable} == {"neuron-match", "robust-match", "aligned-match",
                                                                      "layer-map", "head-match"}


HEAVY = ("weasyprint", "pyhanko", "matplotlib", "statsmodels", "scipy.stats", "ml_dtypes", "tqdm")


def _loaded_after(code: str) -> set[str]:
    """Heavy modules present after running ``code`` in a fresh interpreter (nothing imported by this test run leaks in)."""
    probe = code + f"\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SOURCE.parent)})
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split("\n")[-2].split())


def test_the_cli_imports_no_heavy_library_at_start():
    assert _loaded_after("import audit.cli\nimport audit\naudit.__version__") == set()


def test_inspect_imports_no_heavy_library(tmp_path):
    from audit.testing.synth import Dims, make_checkpoint

    path = make_checkpoint(tmp_path / "m", "llama", Dims(), seed=1, dtype="BF16").path
    code = f"from audit.cli import main\nassert main(['inspect', {str(path)!r}, '--json']) == 0"
    assert _loaded_after(code) == set()  # a bf16 header is checked without ml_dtypes


def test_compare_with_attn_std_imports_only_what_its_test_needs(tmp_path):
    """Its bf16 weights are reduced as bits (no ml_dtypes), the other methods' modules stay unimported, and
    scipy.stats comes with the permutation test, after the weights are read."""
    from audit.testing.synth import Dims, make_checkpoint

    a = make_checkpoint(tmp_path / "a", "llama", Dims(layers=4), seed=1, dtype="BF16").path
    b = make_checkpoint(tmp_path / "b", "llama", Dims(layers=4), seed=2, dtype="BF16").path
    code = (f"from audit.cli import main\nassert main(['compare', {str(a)!r}, {str(b)!r}, '--methods', 'attn-std']) == 0\n"
            "import sys\nassert 'audit.methods.aligned_match' not in sys.modules\n"
            "assert 'audit.format.json' not in sys.modules")
    assert _loaded_after(code) == {"scipy.stats"}
    assert _loaded_after("import audit.compare, audit.methods.attn_std") == set()


def test_the_heavy_libraries_do_load_where_needed():
    """The probe can fail: reading a bf16 tensor loads ml_dtypes, running a permutation test loads scipy.stats."""
    assert "ml_dtypes" in _loaded_after("from audit.checkpoint.dtypes import numpy_dtype\nnumpy_dtype('BF16')")
    assert "scipy.stats" in _loaded_after("import numpy as np\nfrom audit.stats import linear_permutation_test\n"
                                          "linear_permutation_test(np.eye(3), n_resamples=10, seed=0, unit='rows')")


def test_the_registry_names_each_method_by_its_own_name():
    assert [cls.name for cls in REGISTRY.values()] == list(REGISTRY)


def test_lazy_names_of_the_package():
    import audit

    assert audit.open_checkpoint is importlib.import_module("audit.checkpoint").open_checkpoint
    with pytest.raises(AttributeError):
        audit.no_such_name  # noqa: B018
