"""``python -m runtime``: the same as ``imap-runtime`` (app/main.py), kept as the documented way to start the
runtime from a checkout. The only module of runtime/ that reaches the composition root above it: it is a command,
which nothing imports (tests/test_layering.py)."""
import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
