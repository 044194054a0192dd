"""A STOW-RS front for a real Orthanc that refuses what some PACS refuse over DICOMweb: chosen SOP classes and
transfer syntaxes (FailedSOPSequence, PS3.18 10.5.3). What it accepts it stores in Orthanc through its REST API.
Orthanc itself cannot show this: its DICOMweb plugin stores any SOP class, and (1.7) reports an instance its Lua
ReceivedInstanceFilter dropped as stored. ``dropped_classes`` are acknowledged as stored and never stored, as such a
filter does. QIDO-RS (GET) is passed to Orthanc's DICOMweb plugin."""

from __future__ import annotations

import io
import json
import re
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom

from servers.orthanc import OPENER

SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # "Referenced Transfer Syntax not supported" (PS3.18 Table I.2-3)


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart/related body (STOW-RS requests, WADO-RS responses)."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


class StowStub:
    """``with StowStub(orthanc_url, refused_classes={...}, refused_syntaxes={...}) as stub: stub.url ...``"""

    def __init__(self, orthanc_url: str, refused_classes: set[str] = frozenset(),
                 refused_syntaxes: set[str] = frozenset(), dropped_classes: set[str] = frozenset()):
        self.orthanc_url = orthanc_url
        self.refused_classes, self.refused_syntaxes = set(refused_classes), set(refused_syntaxes)
        self.dropped_classes = set(dropped_classes)
        self.received: list[tuple[str, str, bool]] = []  # (SOP class, transfer syntax, stored)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.read_body()
                status, document = stub.store(split_multipart(body, self.headers["Content-Type"]))
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                try:
                    with OPENER.open(stub.orthanc_url + self.path, timeout=60) as response:
                        status, payload = response.status, response.read()
                        content_type = response.headers.get("Content-Type", "application/dicom+json")
                except urllib.error.HTTPError as exc:
                    status, payload, content_type = exc.code, exc.read(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def read_body(self) -> bytes:
                if self.headers.get("Content-Length"):
                    return self.rfile.read(int(self.headers["Content-Length"]))
                chunks = []  # Transfer-Encoding: chunked (dicomweb-client streams large requests)
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(chunk)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def store(self, parts: list[bytes]) -> tuple[int, dict]:
        referenced, failed = [], []
        for part in parts:
            ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True)
            sop_class, syntax = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
            item = {"00081150": {"vr": "UI", "Value": [sop_class]},
                    "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]}}
            reason = SOP_CLASS_NOT_SUPPORTED if sop_class in self.refused_classes else \
                TRANSFER_SYNTAX_NOT_SUPPORTED if syntax in self.refused_syntaxes else None
            self.received.append((sop_class, syntax, reason is None))
            if reason is not None:
                item["00081197"] = {"vr": "US", "Value": [reason]}
                failed.append(item)
                continue
            referenced.append(item)
            if sop_class in self.dropped_classes:
                continue
            request = urllib.request.Request(self.orthanc_url + "/instances", data=part, method="POST",
                                             headers={"Content-Type": "application/dicom"})
            OPENER.open(request, timeout=60).close()
        document = {"00081198": {"vr": "SQ", "Value": failed}, "00081199": {"vr": "SQ", "Value": referenced}}
        return (200 if not failed else 202 if referenced else 409), document

    def __enter__(self) -> StowStub:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
