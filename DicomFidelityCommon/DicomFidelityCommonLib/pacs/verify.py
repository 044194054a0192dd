"""Query back what a destination said it stored: a success status is not proof. Orthanc 1.10, for one, answers
C-STORE 0x0000 and STOW-RS "stored" for an instance its own ReceivedInstanceFilter dropped (measured).

One query per sent series, for every SOP instance UID in it: C-FIND (Study Root, IMAGE level) for ``AET@host:port``,
QIDO-RS for DICOMweb. An object the destination does not list is marked ``verified = False`` and fails the send; when
the destination cannot be queried (many PACS refuse C-FIND from an AE title they do not know, Orthanc by default),
the objects stay ``verified = None`` and the result says why, as a warning.
"""

from __future__ import annotations

import time
from collections import defaultdict

from DicomFidelityCommonLib.pacs.destination import Destination
from DicomFidelityCommonLib.pacs.result import PacsError, Protocol, SendResult, SentObject

ATTEMPTS = 3  # a server may index an instance a moment after acknowledging it ...
RETRY_DELAY_S = 0.5  # ... so a missing one is asked for again after this long
QIDO_PAGE = 500  # instances per QIDO-RS request (servers cap their pages; we follow with offsets)
PENDING = {0xFF00, 0xFF01}  # C-FIND: a match follows


def verify_sent(result: SendResult, destination: Destination, calling_aet: str, timeout: float) -> None:
    """Set ``verified`` on every object ``result`` says was stored; ``result.verification_problem`` when the
    destination could not be asked."""
    sent = [o for o in result.objects if o.ok]
    if not sent:
        return
    series: dict[tuple[str, str], list[SentObject]] = defaultdict(list)
    for obj in sent:
        series[(obj.sent_study_instance_uid, obj.sent_series_instance_uid)].append(obj)
    query = _query_dimse if destination.protocol == Protocol.DIMSE else _query_qido
    start = time.perf_counter()
    missing = list(series)
    try:
        for attempt in range(ATTEMPTS):
            found = query(destination, calling_aet, timeout, missing)
            for key in list(missing):
                for obj in series[key]:
                    obj.verified = obj.sent_sop_instance_uid in found[key]
            missing = [key for key in missing if not all(o.verified for o in series[key])]
            if not missing or attempt == ATTEMPTS - 1:
                break
            time.sleep(RETRY_DELAY_S)
    except PacsError as exc:
        for obj in sent:
            obj.verified = None
        result.verification_problem = str(exc)
        result.warnings.append(f"{destination.text}: not verified: {exc}")
    for obj in sent:
        if obj.verified is False:
            obj.problem = ("the destination acknowledged it but does not list it when queried back (dropped by a "
                           "filter or rule on the server?)")
    result.timings["verify"] = time.perf_counter() - start


def _query_dimse(destination: Destination, calling_aet: str, timeout: float,
                 series: list[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(FIND)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet)
    if not assoc.is_established:
        raise PacsError("the association for C-FIND was refused")
    found: dict[tuple[str, str], set[str]] = {}
    try:
        if not any(str(c.abstract_syntax) == str(FIND) for c in assoc.accepted_contexts):
            raise PacsError("the destination does not offer C-FIND (Study Root)")
        for study, series_uid in series:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "IMAGE"
            identifier.StudyInstanceUID = study
            identifier.SeriesInstanceUID = series_uid
            identifier.SOPInstanceUID = ""
            uids = found[(study, series_uid)] = set()
            for status, match in assoc.send_c_find(identifier, FIND):
                if status is None or "Status" not in status:
                    raise PacsError(f"C-FIND from AE title {calling_aet!r} was refused (the association ended; "
                                    "the destination may not allow queries from an AE title it does not know)")
                code = int(status.Status)
                if code in PENDING and match is not None and "SOPInstanceUID" in match:
                    uids.add(str(match.SOPInstanceUID))
                elif code not in PENDING and code != 0:
                    raise PacsError(f"C-FIND failed with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def _query_qido(destination: Destination, calling_aet: str, timeout: float,
                series: list[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    import requests

    from DicomFidelityCommonLib.pacs.stow import make_client

    client = make_client(destination, timeout)
    found: dict[tuple[str, str], set[str]] = {}
    for study, series_uid in series:
        uids = found[(study, series_uid)] = set()
        offset = 0
        while True:
            try:
                page = client.search_for_instances(study_instance_uid=study, series_instance_uid=series_uid,
                                                   fields=["SOPInstanceUID"], limit=QIDO_PAGE, offset=offset)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                raise PacsError(f"QIDO-RS query failed (HTTP {status})") from exc
            except requests.RequestException as exc:
                raise PacsError(f"QIDO-RS query failed ({type(exc).__name__})") from exc
            known = len(uids)
            uids.update(str(item["00080018"]["Value"][0]) for item in page
                        if item.get("00080018", {}).get("Value"))
            if len(page) < QIDO_PAGE or len(uids) == known:  # the last page, or a server that ignores offset
                break
            offset += len(page)
    return found
