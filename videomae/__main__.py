"""``python -m videomae``: the ``videomae`` command (also what ``deepspeed --module videomae`` and
``torchrun -m videomae`` run)."""

import sys

from videomae.cli import main

sys.exit(main())
