import sys

from fastindex.cli import main

sys.exit(main())
