"""One process of a two-process job (``jax.distributed`` over localhost): a step loop that asks
:class:`rlhf_jax.preemption.PreemptionGuard` after each step, as the stages do. Process 1
sends itself SIGTERM during step ``SIGNAL_AT``; it prints ``{"stopped_after", "received"}``."""

import json
import os
import signal
import sys

from rlhf_jax.preemption import PreemptionGuard
from rlhf_jax.sharding import initialize_distributed

SIGNAL_AT, STEPS = 3, 8

if __name__ == "__main__":
    assert initialize_distributed()
    import jax
    stopped_after = None
    with PreemptionGuard() as guard:
        for step in range(STEPS):
            if step == SIGNAL_AT and jax.process_index() == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            if guard.should_stop():
                stopped_after = step
                break
    print(json.dumps({"stopped_after": stopped_after, "received": guard.received}))
    sys.stdout.flush()
