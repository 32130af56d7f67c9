"""``python -m videomae.cli``."""

import sys

from videomae.cli import main

sys.exit(main())
