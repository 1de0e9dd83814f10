"""Image processing with libvips: an ordered list of small steps (imgproxy's model).

Public surface used by the consumer: ``process`` and ``Rendered``.
"""

from worker.imaging.pipeline import Rendered, process

__all__ = ["Rendered", "process"]
