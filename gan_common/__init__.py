"""What both backends share and that imports neither jax nor torch: the config and CLI,
datasets as uint8 arrays, image grids, the neutral weight file, metric maths and run files."""

from gan_common.config import Config
from gan_common.errors import UserError

__all__ = ["Config", "UserError"]
