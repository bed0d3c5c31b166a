"""``python -m humanclap.cli`` (what ``torchrun -m humanclap.cli`` runs)."""

import sys

from humanclap.cli.main import main

sys.exit(main())
