"""`python -m ugvae ...` is the `ugvae` command."""

import sys

from .run import main

sys.exit(main())
