"""python -m attnzoo.cli"""

import sys

from . import main

sys.exit(main())
