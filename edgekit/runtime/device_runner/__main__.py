"""``python3 -m device_runner``: the benchmark command a device runs (see runner.py)."""
import sys

from .runner import main

sys.exit(main())
