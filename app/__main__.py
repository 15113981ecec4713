"""``python -m app``: the same as ``imap-runtime``."""
import sys

from app.main import main

sys.exit(main())
