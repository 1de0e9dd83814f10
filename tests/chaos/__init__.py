"""`make chaos`: a bounded run of mixed load against real pixq processes on a 3-node JetStream
cluster, Redis with Sentinel and S3 (moto), with faults injected at random (seeded), ending in
invariant checks. Entry point: ``python -m tests.chaos --seconds 600 [--seed N] [--report PATH]``;
tests/chaos/test_chaos_short.py runs the same thing for 60 s inside `make test`.

One concept per module: stack (the processes), load (what clients send, what they saw),
faults (what breaks, when), invariants (what must hold at the end), report (what is printed),
run (the order of it all).
"""
