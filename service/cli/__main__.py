"""`python -m service.cli`: the `counterweight` command."""

import sys

from service.cli.main import main

sys.exit(main())
