"""A human Turing test of a checkpoint: a local web page shows real and generated digits one at a time, 50/50,
and a person answers human or AI; at the end, the fool rate (AI digits judged human) with its 95% interval.
All of it is gan_common.turing; this backend only draws the generated digits.

    python -m gan_jax.turing --checkpoint runs/mnist --num 100   # then open http://127.0.0.1:8000/
    python -m gan_jax.turing --report runs/mnist                 # every session of the run, and pooled
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from gan_common.errors import cli_entry
from gan_common.turing import TuringServer, turing_main
from gan_jax.backend import load_generator


@cli_entry
def main(argv: Sequence[str] | None = None, on_start: Callable[[TuringServer], None] | None = None) -> int:
    """on_start(server): called once the port is bound (tests learn the port from it and stop the server)."""
    return turing_main(argv, "python -m gan_jax.turing", load_generator, on_start)


if __name__ == "__main__":
    sys.exit(main())
