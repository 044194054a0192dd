"""Send what the modules write (SEG, RTSTRUCT, RTDOSE, reference series) to a PACS: one facade, ``send_files``.

- ``AET@host:port``: C-STORE (pynetdicom) on one association, with negotiation (pacs.dimse): an object goes as it is
  when the peer accepts its SOP class and transfer syntax; transcoded to Explicit (or Implicit) VR Little Endian when
  it accepts the class but not the syntax (e.g. Deflated); a LABELMAP SEG whose class is refused goes as a BINARY
  SEG made by the injected ``converter`` (SegmentationQALib provides it: this package never imports a module's Lib).
- ``http(s)://.../dicom-web``: STOW-RS (dicomweb-client, pacs.stow); HTTP cannot negotiate, so a refused object is
  retried once, converted or transcoded the same way.
- Then every object the destination acknowledged is queried back (pacs.verify: C-FIND or QIDO-RS), since a success
  status is not proof that it was kept; one it does not list fails.
- The result (pacs.result) says per object what was sent and how; the CLI contract turns failures into exit 1.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from DicomFidelityCommonLib.dependencies import parse_requirement, require
from DicomFidelityCommonLib.pacs.destination import DEFAULT_CALLING_AET, Destination, check_aet, parse_destination
from DicomFidelityCommonLib.pacs.objects import LabelmapConverter, collect_files, read_object_header
from DicomFidelityCommonLib.pacs.result import (
    BINARY_SEG_SOP_CLASS,
    LABELMAP_SEG_SOP_CLASS,
    PacsError,
    Protocol,
    SendAction,
    SendResult,
    SentObject,
)
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress

NETWORK_PACKAGES = {Protocol.DIMSE: "pynetdicom>=2.1", Protocol.STOW_RS: "dicomweb-client"}


def require_network_package(protocol: Protocol) -> None:
    """The package a protocol needs, or MissingDependencyError with the way to install it here (pip, or Slicer's
    pip_install in the app)."""
    require([parse_requirement(NETWORK_PACKAGES[protocol])])


def send_files(sources: Iterable[str | Path], destination: str | Destination,
               calling_aet: str = DEFAULT_CALLING_AET, converter: LabelmapConverter | None = None,
               progress: ProgressCallback | None = None, timeout: float = 30.0,
               keep_converted: str | Path | None = None, verify: bool = True) -> SendResult:
    """Send the DICOM files (and the DICOM files in folders) in ``sources`` to ``destination``, then (``verify``)
    query back what it acknowledged.

    Converted BINARY SEGs are made in a temporary folder and removed afterwards, unless ``keep_converted`` names
    a folder to keep them in. A destination that cannot be reached raises PacsError; objects the peer refuses are
    reported in the result (``SendResult.ok`` false), the others are still sent.
    """
    from DicomFidelityCommonLib.pacs.dimse import send_dimse
    from DicomFidelityCommonLib.pacs.stow import send_stow
    from DicomFidelityCommonLib.pacs.verify import verify_sent

    progress = progress or no_progress
    destination = destination if isinstance(destination, Destination) else parse_destination(destination)
    calling_aet = check_aet(calling_aet, "calling AE title")
    require_network_package(destination.protocol)
    start = time.perf_counter()
    files = collect_files(sources)
    headers = [read_object_header(path) for path in files]
    read_time = time.perf_counter() - start
    sender = send_dimse if destination.protocol == Protocol.DIMSE else send_stow
    with tempfile.TemporaryDirectory(prefix="dicomfidelity-send-") as scratch:
        workdir = Path(keep_converted) if keep_converted else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        result = sender(headers, destination, calling_aet, converter, workdir, progress, timeout)
        if not keep_converted:
            for sent in result.objects:
                sent.converted_path = ""  # removed with the scratch folder
    if verify:
        progress(1.0, "querying back what was stored")
        verify_sent(result, destination, calling_aet, timeout)
    result.timings["read_headers"] = read_time
    result.timings["total"] = time.perf_counter() - start
    return result


__all__ = [
    "BINARY_SEG_SOP_CLASS", "DEFAULT_CALLING_AET", "LABELMAP_SEG_SOP_CLASS", "Destination", "LabelmapConverter",
    "PacsError", "Protocol", "SendAction", "SendResult", "SentObject", "parse_destination", "send_files",
]
