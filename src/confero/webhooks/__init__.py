"""Webhooks: Ant Media's `listenerHookURL` notifications, sent from the application's observers.

`actions` maps application events to Ant Media's actions and body fields (the only place those
wire names live); `delivery` queues and POSTs them, with retries, off the media path.
"""

from confero.webhooks.actions import NOT_APPLICABLE, SENT, Mapper, Notice
from confero.webhooks.delivery import SIGNATURE_HEADER, Hook, Webhooks, encode, retry_delay, signature

__all__ = [
    "NOT_APPLICABLE",
    "SENT",
    "SIGNATURE_HEADER",
    "Hook",
    "Mapper",
    "Notice",
    "Webhooks",
    "encode",
    "retry_delay",
    "signature",
]
