"""Image processing with libvips: an ordered list of small steps (imgproxy's model).

Modules, in pipeline order: load (header, limits, shrink-on-load), colour (orientation,
sRGB), resize / crop / effects (the steps), encode (format choice, savers); pipeline runs
them. Public surface used by the consumer: ``process``, ``Rendered`` and ``Cancellation``.
"""

from worker.imaging.pipeline import Cancellation, Rendered, process

__all__ = ["Cancellation", "Rendered", "process"]
