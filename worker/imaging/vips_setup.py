"""Process-wide libvips configuration, called once at worker start.

Measured in docs/operations.md ("libvips concurrency and cache"): with several jobs in
parallel threads, per-operation threading (VIPS_CONCURRENCY) beyond 1 buys nothing on a
small node and the operation cache (VIPS_CACHE_MAX_OPS) only helps repeated identical
operations, which a job queue never issues; both default off.
"""

import pyvips

from pixq.limits import Limits
from pixq.sniff import apply_loader_policy


def configure_vips(concurrency: int, cache_max_ops: int, limits: Limits | None = None) -> None:
    """Set libvips' per-pipeline thread count and its operation cache size; block the
    loaders that the input allowlist does not need (untrusted ones such as SVG/PDF)."""
    pyvips.concurrency_set(max(1, concurrency))
    pyvips.cache_set_max(max(0, cache_max_ops))
    if cache_max_ops == 0:
        pyvips.cache_set_max_mem(0)
        pyvips.cache_set_max_files(0)
    if limits is not None:
        apply_loader_policy(limits)
    else:
        pyvips.block_untrusted_set(True)
