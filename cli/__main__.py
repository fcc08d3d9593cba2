"""`python -m cli …`: how `clipmod up` and the supervisor start a worker with this interpreter."""

import sys

from cli.main import main

# Guarded: the worker's decode processes are spawned, and a spawned child imports the parent's
# main module (as `__mp_main__`); unguarded, each would run the command line again.
if __name__ == "__main__":
    sys.exit(main())
