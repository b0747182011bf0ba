"""``python -m vsr_cli ...`` == ``vsr ...``."""

import sys

from vsr_cli.main import main

sys.exit(main())
