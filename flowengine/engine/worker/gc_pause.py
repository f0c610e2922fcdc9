"""A preload module of the forkserver (forkserver.BASE_MODULES), for its side effect: the
forkserver never runs the cyclic garbage collector, and each worker it forks starts with
the collector back on, blind to what it inherited.

The forkserver's imports (numpy, PyAV, pyzmq, the operators, their parameter models) leave
~300 000 objects that live as long as the process, and the collector walked them again on
each of its runs while they grew: ~25 ms of the forkserver's start, on the path every run
waits for. Past its preload the forkserver only forks. In a worker, `gc.freeze` puts the
inherited objects out of the collector's sight, so its collections neither walk them nor
write to their (shared) pages. This is the order the `gc` docs give for a parent that
forks without exec: disable early in the parent, freeze, enable early in each child.
"""

import gc
import sys
from multiprocessing import util


def _collect_in_the_child(_module: object) -> None:
    gc.freeze()
    gc.enable()


gc.disable()
# Run in every child of this forkserver as it starts (multiprocessing's after-fork hooks).
util.register_after_fork(sys.modules[__name__], _collect_in_the_child)
