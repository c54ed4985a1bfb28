"""`python -m service.cli`: the `counterweight` command."""

import sys

from counterweight.service.cli.main import main

sys.exit(main())
