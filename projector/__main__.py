"""``python -m sentrycam.projector [--clear]``: print (or delete) the projector's numba cache
folder (see :mod:`sentrycam.projector.jit_cache`)."""

from sentrycam.projector.jit_cache import main

raise SystemExit(main())
