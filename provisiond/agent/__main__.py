"""``python -m provisiond.agent``: the ``provisiond-agent`` program."""

from __future__ import annotations

import sys

from provisiond.agent.main import main

if __name__ == "__main__":
    sys.exit(main())
