"""STOW-RS (DICOMweb store): objects in batches; an object the server refuses is retried once, as a BINARY SEG when
it is a LABELMAP SEG, else transcoded to Explicit VR Little Endian (HTTP has no negotiation to ask first)."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from DicomFidelityCommonLib.pacs.destination import Destination
from DicomFidelityCommonLib.pacs.objects import LabelmapConverter, ObjectHeader, read_object_header, transcoded
from DicomFidelityCommonLib.pacs.result import (
    LABELMAP_SEG_SOP_CLASS,
    PacsError,
    Protocol,
    SendAction,
    SendResult,
    SentObject,
)
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress

BATCH_SIZE = 32
SOP_CLASS_NOT_SUPPORTED = 0x0122  # STOW-RS FailureReason (PS3.18 Table I.2-3)


def make_client(destination: Destination, timeout: float):
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if destination.is_loopback:
        session.trust_env = False  # never through a proxy for a server on this machine
    # older dicomweb-client releases (as a Slicer may bundle) take no timeout: they wait as long as requests does
    accepts_timeout = "timeout" in inspect.signature(DICOMwebClient.__init__).parameters
    client = DICOMwebClient(url=destination.url, session=session, **({"timeout": timeout} if accepts_timeout else {}))
    client.set_http_retry_params(retry=False)
    return client


def _failure_reasons(response) -> dict[str, int]:
    """SOP instance UID -> failure reason from a STOW-RS response dataset (FailedSOPSequence)."""
    reasons = {}
    for item in getattr(response, "FailedSOPSequence", None) or []:
        reasons[str(item.get("ReferencedSOPInstanceUID", ""))] = int(item.get("FailureReason", 0x0110))
    return reasons


def _store(client, datasets: list[pydicom.Dataset], destination: Destination) -> tuple[dict[str, int], str]:
    """(failure reasons by SOP instance UID, problem for all of them if the whole request failed)."""
    import requests

    try:
        response = client.store_instances(datasets)
    except requests.HTTPError as exc:
        reasons = {}
        try:
            reasons = _failure_reasons(pydicom.Dataset.from_json(exc.response.json()))
        except Exception:  # a body that is not a DICOM JSON response: the status says it all
            pass
        status = exc.response.status_code if exc.response is not None else "?"
        return reasons, f"HTTP {status} {getattr(exc.response, 'reason', '')}".strip()
    except requests.ConnectionError as exc:
        raise PacsError(f"cannot connect ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                        destination.text) from exc
    except requests.RequestException as exc:
        raise PacsError(f"request failed ({type(exc).__name__}: {exc})", destination.text) from exc
    return _failure_reasons(response), ""


def send_stow(headers: list[ObjectHeader], destination: Destination, calling_aet: str,
              converter: LabelmapConverter | None, workdir: Path, progress: ProgressCallback | None = None,
              timeout: float = 60.0) -> SendResult:
    progress = progress or no_progress
    result = SendResult(destination.text, Protocol.STOW_RS, calling_aet)
    client = make_client(destination, timeout)
    start = time.perf_counter()
    for first in range(0, len(headers), BATCH_SIZE):
        batch = headers[first:first + BATCH_SIZE]
        progress(first / max(1, len(headers)), f"storing {batch[0].path.name}")
        reasons, whole = _store(client, [pydicom.dcmread(h.path) for h in batch], destination)
        for header in batch:
            sent = SentObject(str(header.path), header.sop_class_uid, header.sop_instance_uid,
                              header.transfer_syntax_uid)
            if whole or header.sop_instance_uid in reasons:
                _retry(client, header, sent, reasons.get(header.sop_instance_uid), whole, converter, workdir,
                       destination)
            else:
                sent.mark_sent(header, header.transfer_syntax_uid, SendAction.AS_IS)
            result.objects.append(sent)
    result.timings["send"] = time.perf_counter() - start
    progress(1.0, "done")
    return result


def _retry(client, header: ObjectHeader, sent: SentObject, reason: int | None, whole: str,
           converter: LabelmapConverter | None, workdir: Path, destination: Destination) -> None:
    """One object alone: as it is when only its batch failed; then transcoded to Explicit VR Little Endian, and
    (a LABELMAP SEG) converted to BINARY, in the order the failure reason suggests, until one is stored."""
    problems = [f"failure reason 0x{reason:04X}" if reason is not None else whole]
    if whole and reason is None:  # the batch failed as a whole: this object may be fine on its own
        reasons, alone = _store(client, [pydicom.dcmread(header.path)], destination)
        if not alone and header.sop_instance_uid not in reasons:
            sent.mark_sent(header, header.transfer_syntax_uid, SendAction.AS_IS)
            return
        reason = reasons.get(header.sop_instance_uid)
        problems = [f"failure reason 0x{reason:04X}" if reason is not None else alone]
    attempts = []
    if header.transfer_syntax_uid != ExplicitVRLittleEndian and reason != SOP_CLASS_NOT_SUPPORTED:
        attempts.append(SendAction.TRANSCODED)
    if header.sop_class_uid == LABELMAP_SEG_SOP_CLASS and converter is not None:
        attempts.append(SendAction.CONVERTED)
    sent.status = reason
    for action in attempts:
        try:
            target = header
            if action == SendAction.CONVERTED:
                converted = converter(header.path, workdir)
                target = read_object_header(converted)
                sent.converted_path = str(converted)
            dataset = transcoded(target.path, ExplicitVRLittleEndian)
        except Exception as exc:  # a typed error naming the file; the other objects still go
            problems.append(f"{action.value} not possible: {exc}")
            continue
        reasons, problem = _store(client, [dataset], destination)
        if not problem and target.sop_instance_uid not in reasons:
            sent.mark_sent(target, str(ExplicitVRLittleEndian), action)
            return
        second = reasons.get(target.sop_instance_uid)
        sent.status = second if second is not None else sent.status
        problems.append(f"{action.value}: {problem or f'failure reason 0x{second:04X}'}")
    sent.problem = "refused (" + "; then ".join(problems) + ")"
