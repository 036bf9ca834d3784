"""``python -m attnzoo.bench``: the benchmark suite's command line, also how the CPU memory probes run."""

import sys

from .command import main

sys.exit(main())
