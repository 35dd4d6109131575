"""``python -m relayer``: relayer's console tools (``python -m relayer tail --help``)."""

import sys

from ._tail import main

if __name__ == "__main__":
    sys.exit(main())
