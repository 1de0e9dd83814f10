"""Image processing with libvips: an ordered list of small steps (imgproxy's model).

Modules, in pipeline order: load (header, limits, shrink-on-load), colour (orientation,
sRGB), resize / crop / effects (the steps), encode (format choice, savers); pipeline runs
them. Public surface used by the consumer: ``process_job`` (outputs, input metadata, analysis),
``process`` (outputs only), ``Rendered``, ``Processed`` and ``Cancellation``.
"""

from worker.imaging.pipeline import Cancellation, Processed, Rendered, process, process_job

__all__ = ["Cancellation", "Processed", "Rendered", "process", "process_job"]
