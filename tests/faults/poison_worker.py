"""`pixq-worker` with one injected fault: it dies (SIGKILL, as an OOM kill would) on any job whose
input storage_key contains "poison". Started by the fault tests instead of pixq-worker; production
code has no test hook. Everything else is the real worker entry point."""

import os
import signal

from worker import execute
from worker.main import main

_run = execute.JobRunner.run


async def _run_or_die(self, job):
    if "poison" in job.input.storage_key:
        os.kill(os.getpid(), signal.SIGKILL)
    return await _run(self, job)


execute.JobRunner.run = _run_or_die

if __name__ == "__main__":
    main()
