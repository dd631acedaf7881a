import sys

from kwmlp.cli import main

sys.exit(main())
