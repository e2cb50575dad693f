"""The package as a library and as an install: the Python API (README's example, run as it stands), errors that
name Config fields, --config and the recorded preset, train --help's sections, the console scripts, and the one
line a missing torch or a broken tensorflow-datasets install gets."""

import dataclasses
import importlib.abc
import importlib.machinery
import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib
import types

import numpy as np
import pytest

from gan_common.cli import SECTION_STARTS, SECTIONS, build_parser, flag_sections, parse_args
from gan_common.config import LAUNCH_FIELDS, Config, as_field_names, resume_config
from gan_common.datasets import load_dataset
from gan_common.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse(*argv: str) -> tuple[Config, set[str]]:
    return parse_args(list(argv), "prog", "test")


# ----------------------------------------------------------------------------- the README's example
def _readme_example() -> str:
    """The python block between README.md's api-example markers: the test runs what the README shows."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```\s*<!-- /api-example -->", text, re.S)
    assert block, "README.md lost its <!-- api-example --> block"
    return block.group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict:
    """The README example's namespace after running it in a fresh folder (it writes runs/api_demo there)."""
    folder = tmp_path_factory.mktemp("api")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        namespace: dict = {}
        exec(compile(_readme_example(), "README.md:api-example", "exec"), namespace)
    finally:
        os.chdir(cwd)
    namespace["run_dir"] = folder / namespace["config"].out_dir
    return namespace


# A 200-step run of the default MLP, and 10k reference images through the classifier: 20 s of CPU on a cold
# compile cache, 10 s on the session's warm one (measured on the 2-core VM).
@pytest.mark.slow
def test_readme_example_trains_loads_draws_and_scores(example):
    images, scores, run_dir = example["images"], example["scores"], example["run_dir"]
    assert images.shape == (16, 28, 28, 1) and images.dtype == np.float32
    assert np.all(np.abs(images) <= 1.0)  # G ends in tanh
    assert scores["num_samples"] == 16 and np.isfinite(scores["fid_mnist"]) and 1 <= scores["classes_covered"] <= 10
    assert (run_dir / "checkpoints" / "200" / "weights.safetensors").is_file()
    # The run's config.json starts a new run that computes the same thing (--config round trip through a file
    # the loop wrote), records "no preset", and the API's draw is the sample CLI's draw (same seed, same z).
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["preset"] == "" and saved["steps"] == 200
    # config.json records --lr-decay-steps -1 as the number it stood for: the run's 200 steps
    assert parse("--config", str(run_dir / "config.json"))[0] == example["config"].with_run_length(200)
    from gan_jax.sample import main as sample_main

    out = run_dir / "sixteen.npy"
    assert sample_main(["--checkpoint", str(run_dir), "--num", "16", "--seed", "0", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), images)  # one program, one z: bit for bit


@pytest.mark.slow  # loads the example's run in PyTorch: ~1 s, and torch's import where no test made it yet
def test_gan_torch_api_draws_what_gan_jax_api_draws(example):
    from gan_torch.api import generate, load_generator

    images = generate(load_generator(str(example["run_dir"])), 16, seed=0)
    # The parity suite's forward tolerance (README's Parity: 1e-5): float32 rounding of three matmuls and a tanh.
    np.testing.assert_allclose(images, example["images"], rtol=0, atol=1e-5)


def test_api_errors_name_fields_and_arguments_not_flags(tmp_path):
    from gan_jax.api import Generator, generate, load_generator, train

    with pytest.raises(UserError) as e:
        train(Config.tutorial(lr=0.0))
    assert str(e.value) == "lr must be > 0, got 0.0"
    with pytest.raises(UserError) as e:
        train(Config.tutorial(arch="dcgan", g_hidden="8,8"))
    assert str(e.value) == "g_hidden applies only to arch mlp, got arch dcgan; drop it"
    # An error from inside the run, not from validate: the folder already holds a run.
    (tmp_path / "config.json").write_text(Config.tutorial().to_json())
    with pytest.raises(UserError, match="^out_dir .* already holds a run; pass resume to continue it"):
        train(Config.tutorial(out_dir=str(tmp_path), steps=1))
    with pytest.raises(UserError, match="^resume cannot change lr: they define what the run computes"):
        train(Config.tutorial(out_dir=str(tmp_path), resume=True, lr=1e-3))  # the saved run has the default lr
    with pytest.raises(UserError, match="^path .*nowhere.* does not exist"):
        load_generator(str(tmp_path / "nowhere"))
    unconditional = Generator(apply=lambda z, labels: np.zeros((len(z), 28, 28, 1), np.float32),
                              config=Config.tutorial())
    with pytest.raises(UserError, match="^label 3: this generator is unconditional"):
        generate(unconditional, 16, label=3)
    assert generate(unconditional, 12).shape == (12, 28, 28, 1)


def test_flags_become_field_names_only_where_they_are_config_fields():
    msg = "--eval-every must be >= 0 and --eval-samples >= 10, got -1, 10 (see --help; --checkpoint)"
    assert as_field_names(msg) == ("eval_every must be >= 0 and eval_samples >= 10, got -1, 10 "
                                   "(see --help; --checkpoint)")  # --help and --checkpoint are no fields
    assert as_field_names("--checkpoint 'x' does not exist", {"checkpoint": "path"}) == "path 'x' does not exist"


# ----------------------------------------------------------------------------- --config and the preset record
def test_config_round_trips_through_a_file_and_flags_override_it(tmp_path):
    original, _ = parse("--preset", "dcgan", "--steps", "30", "--seed", "4", "--d-norm", "spectral",
                        "--out-dir", str(tmp_path / "a"))
    path = tmp_path / "config.json"
    # As a resumed multi-process run saved it: resume and the launch layout are this launch's, never the file's.
    path.write_text(dataclasses.replace(original, resume=True, devices=4, num_processes=2, process_id=1).to_json())
    again, given = parse("--config", str(path))
    assert again == original and given == set()
    changed, given = parse("--config", str(path), "--seed", "5", "--out-dir", str(tmp_path / "b"))
    assert changed == dataclasses.replace(original, seed=5, out_dir=str(tmp_path / "b"))
    assert given == {"seed", "out_dir"}
    assert {n: getattr(changed, n) for n in LAUNCH_FIELDS} == {n: getattr(Config, n) for n in LAUNCH_FIELDS}
    # --preset with --config: the preset's values over the file's, the flags over both; the new name recorded.
    mlp, _ = parse("--preset", "tutorial", "--g-hidden", "8,8", "--beta1", "0.3")
    path.write_text(mlp.to_json())
    # (--g-hidden back to its default: a DCGAN takes no MLP widths.)
    with_preset, _ = parse("--config", str(path), "--preset", "dcgan", "--g-hidden", "256,512", "--seed", "2")
    assert (with_preset.arch, with_preset.beta1, with_preset.seed, with_preset.preset) == ("dcgan", 0.5, 2, "dcgan")
    with pytest.raises(UserError, match="^--config starts a new run; --resume continues"):
        parse("--config", str(path), "--resume")
    with pytest.raises(UserError, match="run config .*missing.json"):
        parse("--config", str(tmp_path / "missing.json"))
    path.write_text(json.dumps({**json.loads(mlp.to_json()), "lr": -1.0}))  # a hand-edited file is validated too
    with pytest.raises(UserError, match="--lr must be > 0"):
        parse("--config", str(path))


def test_the_preset_is_recorded_and_old_configs_without_it_still_load_and_resume(tmp_path):
    config, given = parse("--preset", "dcgan")
    assert config.preset == "dcgan" and json.loads(config.to_json())["preset"] == "dcgan"
    assert "preset" not in given  # a record, not a value a resume could change
    assert parse()[0].preset == "" and parse("--arch", "dcgan", "--beta1", "0.5")[0].preset == ""
    assert Config.from_preset("dcgan", seed=2) == dataclasses.replace(config, seed=2)
    with pytest.raises(UserError, match="--preset 'dgcan' is not one of .*dcgan"):
        Config.from_preset("dgcan")
    # A config.json written before the field existed: it loads with preset "", and resuming it with the
    # --preset it was started with is no change.
    old = json.loads(parse("--preset", "dcgan", "--steps", "40")[0].to_json())
    del old["preset"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    saved = Config.from_json_file(str(path))
    assert saved.preset == ""
    resumed = resume_config(saved, *parse("--preset", "dcgan", "--resume", "--steps", "80"))
    assert (resumed.steps, resumed.arch, resumed.preset, resumed.resume) == (80, "dcgan", "", True)


# ----------------------------------------------------------------------------- train --help
def _sections(help_text: str) -> dict[str, str]:
    """--help's text per section title ("options", "model", ..., "examples")."""
    parts = re.split(r"^(\S[^\n]*):\n", help_text, flags=re.M)
    return {title: body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_train_help_groups_every_flag_and_ends_with_four_examples():
    sections = _sections(build_parser("python -m gan_jax.train", "Train.").format_help())
    assert list(sections) == ["options", "start from", *SECTIONS, "examples"]
    assert set(SECTION_STARTS) <= {f.name for f in dataclasses.fields(Config)}  # no start names a lost field
    shown = {title: re.findall(r"^  --([a-z0-9-]+)", sections[title], flags=re.M) for title in SECTIONS}
    fields = [n for n in flag_sections() if n != "preset"]  # --preset sits under "start from"
    assert shown == {title: [n.replace("_", "-") for n in fields if flag_sections()[n] == title] for title in SECTIONS}
    # Where docs/usage.md puts them: a field in the wrong section fails here.
    expected = {"arch": "model", "conditional": "model", "loss": "optimisation", "lr": "optimisation",
                "batch_size": "optimisation", "ema_decay": "optimisation", "dataset": "data", "data_dir": "data",
                "steps": "run", "seed": "run", "out_dir": "run", "resume": "run", "eval_every": "evaluation",
                "eval_c2st": "evaluation", "precision": "parallel and precision",
                "process_id": "parallel and precision"}
    assert {n: s for n, s in flag_sections().items() if n in expected} == expected
    assert re.findall(r"^  (--[a-z-]+)", sections["start from"], flags=re.M) == ["--config", "--preset"]
    assert re.findall(r"^  (-[-a-z0-9]+)", sections["options"], flags=re.M) == ["-h"]  # -h, --help alone
    commands = [line.strip() for line in sections["examples"].splitlines() if line.strip().startswith("python")]
    assert len(commands) == 4
    known = set(build_parser("p", "d")._option_string_actions)
    for command in commands:  # printed line for line, and every flag in them exists
        assert command.startswith("python -m gan_jax.train --")
        assert {t for t in command.split() if t.startswith("--")} <= known


# ----------------------------------------------------------------------------- the install
def test_every_console_script_names_an_importable_main():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    expected = {f"gan-{b}-{c}": f"gan_{b}.{c}:main" for b in ("jax", "torch") for c in ("train", "sample", "evaluate")}
    assert scripts == expected
    import importlib

    for target in scripts.values():
        module, _, name = target.partition(":")
        main = getattr(importlib.import_module(module), name)
        with pytest.raises(SystemExit) as e:  # --help: argparse prints and exits 0, after the mains' imports
            main(["--help"])
        assert e.value.code == 0


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict:
    """An environment whose Pythons find no torch: a sitecustomize puts None in sys.modules["torch"], which is
    what `import torch` then raises ModuleNotFoundError on, as when torch is not installed."""
    site = tmp_path_factory.mktemp("no_torch")
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def _run(env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.mark.parametrize("cli", ["train", "sample", "evaluate"])
def test_gan_torch_without_torch_says_how_to_install_it(no_torch, cli):
    out = _run(no_torch, "-m", f"gan_torch.{cli}", "--help")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [out.stderr.strip()]  # one line, no traceback
    assert out.stderr.startswith("error: gan_torch needs PyTorch, which is not installed: pip install torch==2.13.0 "
                                 "--index-url https://download.pytorch.org/whl/cpu (CUDA builds: docs/usage.md)")


def test_gan_torch_scripts_and_imports_without_torch(no_torch, tmp_path):
    # The console script as pip writes it: its name, then `from module import main`.
    script = tmp_path / "gan-torch-train"
    script.write_text("import sys\nfrom gan_torch.train import main\nsys.exit(main())\n")
    out = _run(no_torch, str(script), "--steps", "10")
    assert out.returncode == 2 and out.stderr.startswith("error: gan_torch needs PyTorch")
    assert "Traceback" not in out.stderr
    # A library import: an ImportError with the same advice (a traceback is what a script expects from import).
    out = _run(no_torch, "-c", "import gan_torch.api")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("ModuleNotFoundError: gan_torch needs PyTorch")
    # The control: in the same environment, what needs no torch imports.
    assert _run(no_torch, "-c", "import gan_common.config, gan_jax").returncode == 0


# ----------------------------------------------------------------------------- tensorflow-datasets broken
class _FailingImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `module` and fails to execute it with ModuleNotFoundError for `missing`: `missing` == `module` is
    a package that is not installed, another name a dependency of an installed one that is not."""

    def __init__(self, module: str, missing: str):
        self.module, self.missing = module, missing

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname == self.module else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {self.missing!r}", name=self.missing)


@pytest.mark.parametrize("missing", ["etils.epath", "tensorflow_datasets"])
def test_tfds_that_cannot_import_names_the_missing_module(monkeypatch, missing):
    monkeypatch.delitem(sys.modules, "tensorflow_datasets", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport("tensorflow_datasets", missing), *sys.meta_path])
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", "train", source="tfds")
    if missing == "tensorflow_datasets":  # tfds itself is missing: then its extra is the fix
        assert "needs tensorflow-datasets, which is not installed; install the tfds extra" in str(e.value)
    else:
        assert str(e.value).startswith("tensorflow-datasets is installed but imports 'etils.epath', which is not; "
                                       "install the package that provides that module, or pass --data-source idx")


def test_tfds_missing_a_module_it_imports_late_names_it(monkeypatch):
    def data_source(name, split, data_dir):
        raise ModuleNotFoundError("No module named 'array_record'", name="array_record")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source))
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", "train", source="tfds")
    assert "it imports 'array_record', which is not installed" in str(e.value) and "tfds extra" not in str(e.value)
