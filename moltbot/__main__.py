import sys

from moltbot.cli import main

sys.exit(main())
