"""Moved to `tests.support.amsclient`; this name stays an alias of that very module (same
object, so patches through either name act on both) until every importer uses the new one."""

import sys

from tests.support import amsclient

sys.modules[__name__] = amsclient
