import sys

from kwmlp.apps.cli import main

sys.exit(main())
