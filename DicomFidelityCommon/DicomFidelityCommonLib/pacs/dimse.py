"""C-STORE with negotiation: propose each object's own transfer syntax and an uncompressed fallback, then send each
object as it is, transcoded to what the peer accepted, or (LABELMAP SEG refused) converted to a BINARY SEG."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError
from DicomFidelityCommonLib.pacs.destination import Destination
from DicomFidelityCommonLib.pacs.objects import (
    UNCOMPRESSED,
    LabelmapConverter,
    ObjectHeader,
    choose_uncompressed,
    read_object_header,
    transcoded,
)
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

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255
# C-STORE statuses that store the object (PS3.4 B.2.3): success and the warnings
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007, 0x0107, 0x0116}


def requested_contexts(headers: list[ObjectHeader], can_convert: bool) -> list[tuple[str, list[str]]]:
    """(SOP class, transfer syntaxes) to propose: each object's own syntax alone (so the peer can say yes to it
    rather than pick another), then the uncompressed ones as a fallback (unless Explicit VR Little Endian was
    proposed alone); BINARY SEG too where a LABELMAP one may need it."""
    contexts: list[tuple[str, list[str]]] = []
    classes = list(dict.fromkeys(h.sop_class_uid for h in headers))
    for sop_class in classes:
        syntaxes = list(dict.fromkeys(h.transfer_syntax_uid for h in headers if h.sop_class_uid == sop_class))
        contexts.extend((sop_class, [syntax]) for syntax in syntaxes)
        if UNCOMPRESSED[0] not in syntaxes:
            contexts.append((sop_class, [str(t) for t in UNCOMPRESSED]))
    if can_convert and LABELMAP_SEG_SOP_CLASS in classes and BINARY_SEG_SOP_CLASS not in classes:
        # the converter may keep the LABELMAP's syntax (e.g. deflate): offer those alone too, then uncompressed
        syntaxes = dict.fromkeys(h.transfer_syntax_uid for h in headers if h.sop_class_uid == LABELMAP_SEG_SOP_CLASS)
        contexts.extend((BINARY_SEG_SOP_CLASS, [syntax]) for syntax in syntaxes if syntax not in UNCOMPRESSED)
        contexts.append((BINARY_SEG_SOP_CLASS, [str(t) for t in UNCOMPRESSED]))
    if len(contexts) > MAX_CONTEXTS:
        raise PacsError(f"{len(classes)} SOP classes and transfer syntaxes need {len(contexts)} presentation "
                        f"contexts, more than the {MAX_CONTEXTS} one association can propose; send them in parts")
    return contexts


def connection_problem(destination: Destination, timeout: float) -> str | None:
    """The socket's own error when the destination cannot be reached (pynetdicom only logs it), else None."""
    try:
        with socket.create_connection((destination.host, destination.port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"


def _no_delay(assoc) -> None:
    """TCP_NODELAY on the association's socket: the last small P-DATA of each object otherwise waits for the
    peer's delayed ACK (measured: 95 -> 50 ms per CT slice to Orthanc on loopback)."""
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a test double) or already closed: the default only costs time
            pass


def send_dimse(headers: list[ObjectHeader], destination: Destination, calling_aet: str,
               converter: LabelmapConverter | None, workdir: Path, progress: ProgressCallback | None = None,
               timeout: float = 30.0) -> SendResult:
    from pynetdicom import AE

    progress = progress or no_progress
    result = SendResult(destination.text, Protocol.DIMSE, calling_aet)
    start = time.perf_counter()
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntaxes in requested_contexts(headers, converter is not None):
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            problem = "the peer rejected the association (check the called and calling AE titles)"
        else:
            problem = connection_problem(destination, timeout) or (
                "the peer accepted the connection but aborted the association request (not a DICOM server?)")
        raise PacsError(problem, destination.text)
    result.timings["associate"] = time.perf_counter() - start
    _no_delay(assoc)
    accepted: dict[str, list[str]] = {}
    for context in assoc.accepted_contexts:
        accepted.setdefault(str(context.abstract_syntax), []).extend(str(t) for t in context.transfer_syntax)
    t = time.perf_counter()
    try:
        for index, header in enumerate(headers):
            progress(index / max(1, len(headers)), f"sending {header.path.name}")
            result.objects.append(_send_one(assoc, header, accepted, converter, workdir, result.warnings))
    finally:
        if assoc.is_established:
            assoc.release()
    result.timings["send"] = time.perf_counter() - t
    progress(1.0, "done")
    return result


def _send_one(assoc, header: ObjectHeader, accepted: dict[str, list[str]], converter: LabelmapConverter | None,
              workdir: Path, warnings: list[str]) -> SentObject:
    sent = SentObject(str(header.path), header.sop_class_uid, header.sop_instance_uid, header.transfer_syntax_uid)
    target, action = header, SendAction.AS_IS
    if header.sop_class_uid not in accepted:
        if header.sop_class_uid != LABELMAP_SEG_SOP_CLASS:
            sent.problem = f"the peer does not accept SOP class {header.sop_class_uid}"
            return sent
        if converter is None or BINARY_SEG_SOP_CLASS not in accepted:
            sent.problem = ("the peer accepts neither LABELMAP nor BINARY Segmentation Storage" if converter
                            else "the peer does not accept LABELMAP Segmentation Storage (no converter given)")
            return sent
        try:
            converted = converter(header.path, workdir)
            target = read_object_header(converted)
        except Exception as exc:  # the converter's typed errors name the file; keep going with the others
            sent.problem = f"LABELMAP SEG not accepted and the BINARY conversion failed: {exc}"
            return sent
        sent.converted_path = str(converted)
        action = SendAction.CONVERTED
    syntaxes = accepted[target.sop_class_uid]
    if target.transfer_syntax_uid in syntaxes:
        payload, syntax = target.path, target.transfer_syntax_uid
    else:
        syntax = choose_uncompressed(syntaxes)
        if syntax is None:
            sent.problem = f"the peer accepts SOP class {target.sop_class_uid} only in {', '.join(syntaxes)}"
            return sent
        try:
            payload = transcoded(target.path, syntax)
        except DicomFidelityError as exc:  # e.g. compressed pixel data without a decoder: the others still go
            sent.problem = str(exc)
            return sent
        action = SendAction.TRANSCODED if action == SendAction.AS_IS else action
    if not assoc.is_established:
        sent.problem = "the association ended before this object was sent"
        return sent
    try:
        response = assoc.send_c_store(payload)
    except (ValueError, AttributeError) as exc:  # pynetdicom: no context for it after all, or cannot encode it
        sent.problem = f"not sent ({exc})"
        return sent
    status = response.get("Status") if response is not None else None
    sent.status = int(status) if status is not None else None
    if status is None:
        sent.problem = "no C-STORE response (association aborted or timed out)"
        return sent
    if int(status) not in STORED_STATUSES:
        comment = f": {response.ErrorComment}" if "ErrorComment" in response else ""
        sent.problem = f"C-STORE failed with status 0x{int(status):04X}{comment}"
        return sent
    if int(status) != 0:
        warnings.append(f"{header.path}: stored with warning status 0x{int(status):04X}")
    sent.mark_sent(target, syntax, action)
    return sent
