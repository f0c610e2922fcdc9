"""Imported for its side effect, before numpy: a process flowengine starts (the command, the
forkserver and so every worker) uses one BLAS thread, unless the user set the count.

flowengine spreads work over cores with processes (replicas, fused groups), so threads
inside numpy's BLAS only compete with them. They also cost where no BLAS call is made:
OpenBLAS (numpy's and scipy's wheels) starts a thread per core when numpy is imported, and
each spins ~0.1 s of CPU before it sleeps (10 clock ticks after `import numpy; sleep(0.1)`,
here) -- on the cores the command and the forkserver are importing on. And a block large
enough for OpenBLAS to thread (an 8 x 8 channel matrix over 16384 samples, `channels`)
took 3.1 s of CPU with its threads against 0.35 s without, 2000 blocks.

The variables are read when the library loads, so this must run before anything imports
numpy: `cli/entry.py` imports it first, the forkserver preloads it first
(engine/worker/forkserver.py). A library user's own process is the user's: nothing else
imports this module.
"""

import os

# OpenBLAS (pip wheels), MKL and OpenMP builds (conda), in that order of likelihood.
THREAD_COUNT_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")

for _name in THREAD_COUNT_VARIABLES:
    os.environ.setdefault(_name, "1")
