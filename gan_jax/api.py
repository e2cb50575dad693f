"""The Python API of gan_jax: the CLIs' work as calls.

    from gan_jax.api import Config, evaluate, generate, load_generator, train

    train(Config(steps=200, out_dir="runs/api_demo"))     # writes what python -m gan_jax.train writes
    images = generate(load_generator("runs/api_demo"), 16)  # (16, 28, 28, 1) float32 in [-1, 1]
    print(evaluate(images, c2st=False)["fid_mnist"])

gan_torch.api has the same names. Why a module and not `from gan_jax import train`: gan_jax.train and
gan_jax.evaluate are the CLI modules, and Python binds a submodule on its package when it is imported, so a
package attribute `train` would be the function or the module depending on what was imported first.
Errors are gan_common.errors.UserError, naming Config fields (`lr`), not flags (`--lr`).
"""

from gan_common.api import BackendApi, Generator, generate
from gan_common.config import Config
from gan_common.errors import UserError
from gan_jax import backend

_api = BackendApi(backend.train_and_evaluate, backend.load_generator, backend.evaluator)
train = _api.train
load_generator = _api.load_generator
evaluate = _api.evaluate

__all__ = ["Config", "Generator", "UserError", "evaluate", "generate", "load_generator", "train"]
