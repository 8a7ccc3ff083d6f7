"""What the tests (and bench/) share: waiting on conditions, the Ant Media client, test clients.

Importing this package needs neither pytest nor a running server:

* `tests.support.waiting` (re-exported here): `eventually`, `wait_until`, `Timeout`;
* `tests.support.amsclient`: an Ant Media Server client (SDK-like publish/play/1-1 peers over
  aiortc) that bench/ uses too;
* `tests.support.clients`: `Clients`, which closes everything a test opened;
* `tests.support.server`: settings for an in-process server and its leak checks;
* `tests.support.netns`: "remote hosts" in network namespaces on veth pairs (198.18.0.0/15).
"""

from tests.support.waiting import Timeout, eventually, wait_until

__all__ = ["Timeout", "eventually", "wait_until"]
