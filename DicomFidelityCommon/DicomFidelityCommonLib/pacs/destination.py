"""Where to send: ``AET@host:port`` (DICOM C-STORE) or an ``http(s)://`` DICOMweb base URL (STOW-RS)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from DicomFidelityCommonLib.pacs.result import PacsError, Protocol

DEFAULT_CALLING_AET = "DICOMFIDELITY"
AET_PATTERN = re.compile(r"^[\x20-\x7e]{1,16}$")  # default character repertoire, no backslash, 1-16 characters


@dataclass(frozen=True)
class Destination:
    protocol: Protocol
    text: str  # as the user wrote it: the name in messages
    aet: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    @property
    def is_loopback(self) -> bool:
        host = urlparse(self.url).hostname if self.url else self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host or "").is_loopback
        except ValueError:
            return False


def check_aet(aet: str, what: str) -> str:
    aet = aet.strip()
    if not AET_PATTERN.match(aet) or "\\" in aet:
        raise PacsError(f"{what} {aet!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return aet


def parse_destination(text: str) -> Destination:
    """``ORTHANC@127.0.0.1:4242``, ``ORTHANC@[::1]:4242`` or ``http://127.0.0.1:8042/dicom-web``."""
    text = text.strip()
    if text.lower().startswith(("http://", "https://")):
        parsed = urlparse(text)
        if not parsed.hostname:
            raise PacsError(f"destination {text!r} has no host")
        return Destination(Protocol.STOW_RS, text, url=text.rstrip("/"))
    match = re.match(r"^(?P<aet>[^@]+)@(?:\[(?P<host6>[^\]]+)\]|(?P<host>[^:@]+)):(?P<port>\d+)$", text)
    if not match:
        raise PacsError(f"destination {text!r} is neither AET@host:port nor an http(s):// DICOMweb URL")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise PacsError(f"destination {text!r}: port {port} is out of range")
    return Destination(Protocol.DIMSE, text, aet=check_aet(match["aet"], "called AE title"),
                       host=match["host6"] or match["host"], port=port)
