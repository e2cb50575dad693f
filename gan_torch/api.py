"""The Python API of gan_torch, the names of gan_jax.api over the PyTorch backend.

    from gan_torch.api import Config, evaluate, generate, load_generator, train

A module and not the package (`from gan_torch import train`): gan_torch.train and gan_torch.evaluate are the
CLI modules (gan_jax.api says why that matters). Errors are gan_common.errors.UserError, naming Config fields.
"""

from gan_common.api import BackendApi, Generator, generate
from gan_common.config import Config
from gan_common.errors import UserError
from gan_torch import backend

_api = BackendApi(backend.train_and_evaluate, backend.load_generator, backend.evaluator)
train = _api.train
load_generator = _api.load_generator
evaluate = _api.evaluate

__all__ = ["Config", "Generator", "UserError", "evaluate", "generate", "load_generator", "train"]
