"""`python -m cli …`: how `clipmod up` and the supervisor start a worker with this interpreter."""

import sys

from cli.main import main

sys.exit(main())
