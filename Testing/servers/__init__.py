"""Real servers the tests talk to on loopback (Orthanc), started and stopped by the tests themselves."""

from servers.orthanc import OrthancServer

__all__ = ["OrthancServer"]
