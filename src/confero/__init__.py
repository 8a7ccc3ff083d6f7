"""Confero: a WebRTC media server that speaks Ant Media Server's protocol."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
