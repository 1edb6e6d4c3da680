"""``python -m sentjax`` = the ``sentjax`` command."""
import sys

from sentjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
