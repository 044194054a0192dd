"""Orthanc on loopback (Testing/servers/orthanc.py): the SEG is uploaded through REST (POST /instances) and the stored
file must come back byte for byte (GET /instances/{id}/file). Two readers: Orthanc's own decoding of every frame
(REST GET /instances/{id}/numpy), and its DICOMweb plugin's WADO-RS frames transcoded to Explicit VR Little Endian
(what a web viewer such as OHIF fetches). Either way the frames are placed by the SEG's functional groups."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
from servers.orthanc import OPENER, OrthancServer
from servers.stow_stub import split_multipart

from readers.base import Reader, ReaderMissing, ReaderUnsupported, ReadResult, segments_from_frames

_server = {}


def start(workdir: Path, dicomweb: bool = False) -> None:
    """Our own Orthanc (with its DICOMweb plugin only for the DICOMweb reader, which needs it)."""
    try:
        _server["orthanc"] = OrthancServer(workdir / "orthanc", dicomweb=dicomweb).start()
    except RuntimeError as exc:
        raise ReaderMissing(str(exc)) from None


def stop() -> None:
    server = _server.pop("orthanc", None)
    if server is not None:
        server.stop()


def _request(path: str, data: bytes | None = None, what: str = "") -> bytes:
    server = _server["orthanc"]
    request = urllib.request.Request(server.url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/dicom"} if data is not None else {})
    try:
        with OPENER.open(request, timeout=120) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise ReaderUnsupported(f"Orthanc {what or path}: HTTP {exc.code}: {_detail(exc.read())}") from None


def _rest_frames(instance: str, ds: pydicom.Dataset) -> np.ndarray:
    frames = np.load(io.BytesIO(_request(f"/instances/{instance}/numpy?compress=false", what="GET /numpy")))
    return np.rint(frames[..., 0]).astype(np.int64)


def _wado_frames(instance: str, ds: pydicom.Dataset) -> np.ndarray:
    count = int(ds.get("NumberOfFrames", 1))
    path = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
            f"/frames/{','.join(str(n) for n in range(1, count + 1))}")
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    request = urllib.request.Request(_server["orthanc"].url + path, headers={"Accept": accept})
    try:
        with OPENER.open(request, timeout=120) as response:
            content_type, body = response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        raise ReaderUnsupported(f"Orthanc WADO-RS frames: HTTP {exc.code}: {_detail(exc.read())}") from None
    payloads = split_multipart(body, content_type)
    if len(payloads) != count:
        raise ReaderUnsupported(f"Orthanc WADO-RS frames: {len(payloads)} parts for {count} frames")
    pixels = ds.Rows * ds.Columns
    if ds.BitsAllocated == 1:  # each frame on its own, bit-packed (PS3.18 8.7.3.5)
        frames = [np.unpackbits(np.frombuffer(p, np.uint8), bitorder="little")[:pixels] for p in payloads]
    else:
        frames = [np.frombuffer(p, np.uint8 if ds.BitsAllocated == 8 else np.uint16)[:pixels] for p in payloads]
    return np.stack(frames).astype(np.int64)


def _detail(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        detail = json.loads(text)
        text = detail.get("Details") or detail.get("Message") or text
    except ValueError:
        pass
    return text[:200]


def _read(seg_path: Path, frames_of) -> ReadResult:
    data = Path(seg_path).read_bytes()
    stored = json.loads(_request("/instances", data, "POST /instances"))
    instance = stored["ID"]
    try:
        if _request(f"/instances/{instance}/file", what="GET /file") != data:
            raise ReaderUnsupported("Orthanc GET /file: the stored file differs from the uploaded one")
        ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
        return ReadResult(segments_from_frames(ds, frames_of(instance, ds)))
    finally:
        _server["orthanc"].delete_instance(instance)


def version() -> str:
    return json.loads(_request("/system")).get("Version", "?") if "orthanc" in _server else "?"


def dicomweb_version() -> str:
    if "orthanc" not in _server or "dicom-web" not in json.loads(_request("/plugins")):
        return "?"
    return f"{version()} + plugin {json.loads(_request('/plugins/dicom-web')).get('Version', '?')}"


READER = Reader("Orthanc", version, lambda seg, ref, work: _read(seg, _rest_frames), start=start, stop=stop)
DICOMWEB_READER = Reader("Orthanc DICOMweb", dicomweb_version, lambda seg, ref, work: _read(seg, _wado_frames),
                         start=lambda workdir: start(workdir, dicomweb=True), stop=stop)
