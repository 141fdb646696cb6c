import sys

from b2b.cli.main import main

sys.exit(main())
