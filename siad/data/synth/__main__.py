"""`python -m siad.data.synth`: see `siad.data.synth.cli`."""

import sys

from siad.data.synth.cli import main

sys.exit(main())
