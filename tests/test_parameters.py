"""The same parameter resolution and refusals through papermill as through `ctcbook run`."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import ctcbook.book.runner as runner
from ctcbook.book import parameters
from ctcbook.book.parameters import ParameterError, resolve, resolve_notebook
from ctcbook.book.profiles import PARAMETER_DEFAULTS, PROFILES

REPO = Path(__file__).resolve().parents[1]


def test_every_parameter_has_a_spec_and_every_default_passes():
    for chapter, defaults in PARAMETER_DEFAULTS.items():
        assert set(defaults) <= set(parameters.SPECS), chapter
        for profile in PROFILES:
            resolve(chapter, {"profile": profile})


@pytest.mark.parametrize("values, message", [
    ({"epochs": -1}, r"parameter 'epochs' of chapter 01_tradeoff must be an integer >= 1, got -1$"),
    ({"epochs": "ten"}, r"parameter 'epochs' .* must be an integer >= 1, got 'ten' \(a string\)"),
    ({"epochs": True}, r"parameter 'epochs' .* got True"),
    ({"epochs": 2.5}, r"parameter 'epochs' .* got 2.5"),
    ({"lr": 0}, r"parameter 'lr' .* must be a number > 0, got 0"),
    ({"lr": "fast"}, r"parameter 'lr' .* got 'fast' \(a string\)"),
    ({"source": "cifar1000"}, r"parameter 'source' .* must be one of \['fashion_mnist', .*'cifar100'.*got 'cifar1000'"),
    ({"targets": ["mnist5k", "svhn"]}, r"parameter 'targets' .*list of names from \[.*'mnist5k'.*: unknown 'svhn'"),
    ({"seeds": []}, r"parameter 'seeds' .* must be a non-empty list of integers >= 0, got \[\]"),
    ({"seeds": [0, 0]}, r"parameter 'seeds' .* must not repeat"),
    ({"train_size": 0}, r"parameter 'train_size' .*>= 1, or null, got 0"),
    ({"paper_protocol": "fast"}, r"parameter 'paper_protocol' .* one of \['lbfgs', 'paper', 'paper_bn'\]"),
    ({"profile": "cifar1000"}, r"profile must be one of \['cifar100', 'default', 'imagenet', 'small', 'smoke'\], got 'cifar1000'"),
    ({"epoch": 3}, r"chapter 01_tradeoff has no parameter 'epoch'; its parameters are .*'epochs'"),
])
def test_bad_values_are_refused_naming_parameter_value_and_allowed(values, message):
    with pytest.raises(ParameterError, match=message):
        resolve("01_tradeoff", values)


def test_consistency_between_parameters():
    with pytest.raises(ParameterError, match=r"'stage_two_epoch' of chapter 03_ctc must be below epochs \(80\)"):
        resolve("03_ctc", {"stage_two_epoch": 80})
    with pytest.raises(ParameterError, match=r"'mine_seeds' .* subset of seeds \[0, 1\], got \[2\]"):
        resolve("02_information", {"seeds": [0, 1], "mine_seeds": [2]})
    with pytest.raises(ParameterError, match=r"'methods' of chapter 04_dynamic_mlp .*unknown 'mlp'"):
        resolve("04_dynamic_mlp", {"methods": ["concat", "mlp"]})


def test_yaml_float_without_dot_is_read_as_a_number():
    assert resolve("01_tradeoff", {"weight_decay": parameters.parse_value("5e-4")})["weight_decay"] == 5e-4


def test_profile_fills_unset_parameters_and_keeps_the_callers():
    got = resolve("01_tradeoff", {"profile": "cifar100", "epochs": 30})
    assert got["epochs"] == 30 and got["source"] == "cifar100" and got["depth"] == 20 and got["lr"] == 0.05
    assert resolve("01_tradeoff", got) == got  # resolving twice changes nothing


def _kernel(chapter: str, injected: dict) -> dict:
    """A kernel's globals after the real parameters cell and papermill's injected cell have run."""
    from papermill.translators import translate_parameters

    nb = nbformat.read(REPO / "notebooks" / f"{chapter}.ipynb", as_version=4)
    cells = [next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))]
    if injected:
        cells.append(translate_parameters("python3", "python", injected, "Parameters"))
    namespace = {"In": ["", *cells, "resolve_notebook(...)"]}
    for source in cells:
        exec(source, namespace)  # noqa: S102 - the notebook's own cells
    return namespace


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("chapter", sorted(PARAMETER_DEFAULTS))
def test_ctcbook_run_and_the_notebook_cell_give_identical_values(chapter, profile):
    overrides = {"seeds": [0, 5], "probe_every": 7, "test_every": 7} if "probe_every" in PARAMETER_DEFAULTS[chapter] \
        else {"seeds": [0, 5]}
    # the seed subsets compared with the baseline must stay inside the seeds
    overrides.update({n: [5] for n in ("mine_seeds", "discrim_seeds", "ablation_seeds")
                      if n in PARAMETER_DEFAULTS[chapter]})
    checked = runner.resolve_parameters(chapter, profile, overrides)  # what `ctcbook run` checks before the kernel
    kernel = _kernel(chapter, {"profile": profile, **overrides})  # what it injects, as papermill run directly
    assert resolve_notebook(chapter, kernel) == checked
    assert resolve_notebook(chapter, _kernel(chapter, {})) == runner.resolve_parameters(chapter, "default")


def test_a_value_equal_to_the_default_is_kept_under_any_profile():
    assert runner.resolve_parameters("01_tradeoff", "cifar100", {"epochs": 80})["epochs"] == 80
    kernel = _kernel("01_tradeoff", {"profile": "cifar100", "epochs": 80})
    assert resolve_notebook("01_tradeoff", kernel)["epochs"] == 80


def test_names_come_from_the_parameters_and_injected_cells_only():
    kernel = {**_kernel("01_tradeoff", {"epochs": 30}), "base": object()}  # a later cell's variable
    assert parameters.given_names(kernel) == ["profile", "epochs"]
    kernel["In"] = [*kernel["In"][:-1], "base = 1", "resolve_notebook(...)"]  # the check cell run again alone
    with pytest.raises(ParameterError, match="run the notebook's parameters cell"):
        resolve_notebook("01_tradeoff", kernel)
    with_paths = _kernel("01_tradeoff", {"epochs": 30, "PAPERMILL_INPUT_PATH": "in.ipynb"})  # papermill --inject-paths
    assert resolve_notebook("01_tradeoff", with_paths)["epochs"] == 30


def test_without_history_the_names_are_the_fresh_kernels_public_data():
    # nbval executes with no input history: In holds only ""
    kernel = {**_kernel("01_tradeoff", {"epochs": 30}), "In": [""], "Out": {}, "_": None, "get_ipython": print,
              "resolve_notebook": resolve_notebook, "parameters": parameters}
    assert parameters.given_names(kernel) == ["profile", "epochs"]
    assert resolve_notebook("01_tradeoff", kernel)["epochs"] == 30
    kernel["nonexistent_param"] = 3
    with pytest.raises(ParameterError, match="nonexistent_param"):
        resolve_notebook("01_tradeoff", kernel)


def test_runner_refuses_with_the_same_checks(monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("must not execute"))
    with pytest.raises(ParameterError, match=r"parameter 'source' .*got 'cifar1000'"):
        runner.run_chapters(["01_tradeoff"], "default", {"source": "cifar1000"})


def test_every_notebook_checks_its_parameters_in_the_cell_after_the_parameters_cell():
    for chapter in runner.chapters():
        nb = nbformat.read(REPO / "notebooks" / f"{chapter}.ipynb", as_version=4)
        i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        after = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
        assert f'params = resolve_notebook("{chapter}", globals())' in after.source, chapter


def test_cli_refuses_a_range_error_without_torch_papermill_or_a_kernel():
    """`ctcbook run -p epochs -1` must exit non-zero at once: nothing heavy is even imported."""
    code = ("import sys; from ctcbook.book.cli import main; rc = main(['run', '01_tradeoff', '-p', 'epochs', '-1']);"
            "print(rc, sorted(m for m in ('torch', 'papermill', 'jupyter_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[0] == "2 []", out
    assert "parameter 'epochs' of chapter 01_tradeoff must be an integer >= 1, got -1" in out.stderr


def _head(chapter: str, tmp_path: Path) -> Path:
    """The real notebook up to its check cell, plus a cell that prints the resolved parameters as JSON."""
    nb = nbformat.read(REPO / "notebooks" / f"{chapter}.ipynb", as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:i + 2] + [nbformat.v4.new_code_cell("import json\nprint(json.dumps(params))")]
    path = tmp_path / f"{chapter}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_papermill_directly_gets_the_values_of_ctcbook_run(tmp_path):
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(_head("01_tradeoff", tmp_path)), str(out),
                               parameters={"profile": "cifar100", "epochs": 20}, kernel_name="python3",
                               cwd=str(REPO), progress_bar=False)
    printed = json.loads(nbformat.read(out, as_version=4).cells[-1].outputs[-1]["text"])
    assert printed == runner.resolve_parameters("01_tradeoff", "cifar100", {"epochs": 20})
    assert printed == {**PARAMETER_DEFAULTS["01_tradeoff"], **PROFILES["cifar100"]["01_tradeoff"], "epochs": 20,
                       "profile": "cifar100"}


# Every refusal the README lists ("What happens when things go wrong"), plus an unknown name (a typo for epochs):
# (ctcbook run arguments, papermill parameters, the message both give).
REFUSALS = [
    (["-p", "epochs", "-1"], {"epochs": -1},
     "parameter 'epochs' of chapter 01_tradeoff must be an integer >= 1, got -1"),
    (["-p", "source", "cifar1000"], {"source": "cifar1000"},
     "parameter 'source' of chapter 01_tradeoff must be one of"),
    (["--profile", "cifar1000"], {"profile": "cifar1000"},
     "profile must be one of ['cifar100', 'default', 'imagenet', 'small', 'smoke'], got 'cifar1000'"),
    (["-p", "epochs", '"ten"'], {"epochs": "ten"}, "parameter 'epochs' of chapter 01_tradeoff must be an integer >= 1, "
                                                   "got 'ten' (a string)"),
    (["-p", "nonexistent_param", "3"], {"nonexistent_param": 3},
     "chapter 01_tradeoff has no parameter 'nonexistent_param'; its parameters are ['arch', 'augment', 'backend'"),
]


@pytest.mark.parametrize("args, _, message", REFUSALS)
def test_ctcbook_run_refuses_before_a_kernel_starts(args, _, message, capsys):
    from ctcbook.book.cli import main

    assert main(["run", "01_tradeoff", "--profile", "smoke", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.notebook
def test_papermill_directly_refuses_in_the_first_cell_before_any_training(tmp_path, monkeypatch):
    """The whole chapter, run by papermill as a new user would: each refusal stops in the cell after the parameters,
    with ctcbook run's message, and nothing is trained."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("CTCBOOK_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "out.ipynb"
    for _, params, message in REFUSALS:
        with pytest.raises(PapermillExecutionError) as err:
            papermill.execute_notebook(str(REPO / "notebooks" / "01_tradeoff.ipynb"), str(out),
                                       parameters={"profile": "smoke", **params}, kernel_name="python3",
                                       cwd=str(REPO), progress_bar=False)
        assert err.value.ename == "ParameterError" and message in err.value.evalue, params
        cells = nbformat.read(out, as_version=4).cells
        failed = [k for k, c in enumerate(cells) if any(o.output_type == "error" for o in c.get("outputs", []))]
        injected = next(k for k, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", []))
        first_code = next(k for k in range(injected + 1, len(cells)) if cells[k].cell_type == "code")
        assert failed == [first_code] and "resolve_notebook" in cells[first_code].source
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_users_image_folder_is_a_valid_target_name_and_other_unknown_names_are_not():
    assert resolve("01_tradeoff", {"targets": ["digits", "folder:flowers"]})["targets"] == ["digits", "folder:flowers"]
    with pytest.raises(ParameterError, match=r"'targets' .*unknown 'flowers'"):
        resolve("01_tradeoff", {"targets": ["digits", "flowers"]})


def test_probed_epochs_must_be_measured_epochs():
    with pytest.raises(ParameterError, match=r"parameter 'probe_every' of chapter 01_tradeoff must be a multiple of "
                                             r"test_every \(5\), got 4"):
        resolve("01_tradeoff", {"probe_every": 4})
    assert resolve("01_tradeoff", {"probe_every": 4, "test_every": 2})["test_every"] == 2
