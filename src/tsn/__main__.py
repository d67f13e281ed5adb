import sys

from tsn.cli import main

sys.exit(main())
