"""``python -m videomae``: the ``videomae`` command."""

import sys

from videomae.cli import main

sys.exit(main())
