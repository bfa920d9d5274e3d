"""``python -m taskpool_agent``: the same as the ``taskpool-agent`` command."""

import sys

from taskpool_agent.cli import main

sys.exit(main())
