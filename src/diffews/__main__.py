"""``python -m diffews`` (and ``accelerate launch -m diffews``): the `diffews` command."""

import sys

from .cli.main import main

sys.exit(main())
