import sys

from otfuzz.cli import main

sys.exit(main())
