"""``python -m gateway.ops.doctor``: the same as ``garden-gateway doctor``."""

import sys

from gateway.ops.doctor.command import main

sys.exit(main())
