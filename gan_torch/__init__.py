"""The reference: the same GANs in plain eager PyTorch, to check gan_jax against.

Same module and function names as gan_jax, imports flowing one way: models -> losses -> step ->
checkpoint -> backend -> the CLIs (train, sample, evaluate) and the Python API (gan_torch.api);
parallel (torchrun) and classifier (the metrics' network) beside them. It never imports gan_jax, so
a user with only PyTorch installed can train, sample and evaluate with it.

Every module here needs torch, which the base install leaves out (`make train` trains with gan_jax).
Without it, this package says how to install it before any module fails on `import torch`.
"""

import importlib.util as _importlib_util
import os as _os
import sys as _sys

TORCH_MISSING = (
    "gan_torch needs PyTorch, which is not installed: pip install torch==2.13.0 --index-url "
    "https://download.pytorch.org/whl/cpu (CUDA builds: docs/usage.md)"
)


def _running_a_cli() -> bool:
    """Whether this process is a gan_torch command line: `python -m gan_torch.X` (Python sets argv[0] to "-m"
    while it imports the module's package) or a `gan-torch-X` script of pyproject.toml."""
    program = _sys.argv[0] if _sys.argv else ""
    return program == "-m" or _os.path.basename(program).startswith("gan-torch-")


def _check_torch() -> None:
    """A command line prints the CLIs' one `error:` line and exits 2; an import raises ModuleNotFoundError
    saying the same. find_spec, not an import: `import gan_torch` stays as cheap as it was."""
    if _importlib_util.find_spec("torch") is not None:
        return
    if _running_a_cli():
        print(f"error: {TORCH_MISSING}", file=_sys.stderr)
        raise SystemExit(2)
    raise ModuleNotFoundError(TORCH_MISSING, name="torch")


_check_torch()
