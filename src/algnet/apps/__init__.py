"""Command-line applications: ``algnet deblur``, ``algnet profile`` and ``algnet demo``.

Each module defines ``add_parser(subparsers)`` and stays light at import time (torch and OpenCV are
imported inside the functions) so ``algnet --help`` is fast.
"""
