"""A private Orthanc for tests: own configuration and storage in a work folder, free ports, stopped by its PID.

The system service the Debian package installs is never used (CI stops and disables it). The configuration holds
only what must differ from Orthanc's built-in defaults: ports, storage, plugins, and ``RemoteAccessAllowed`` false
(the HTTP API answers loopback clients only). Orthanc 1.10 has no bind-address option, so its DICOM port listens on
every interface while it runs; the tests only ever connect to 127.0.0.1. LABELMAP Segmentation Storage is not among
Orthanc's accepted SOP classes unless ``accept_all`` (``UnknownSopClassAccepted``) is set: the default server shows
a sender's fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY_CANDIDATES = ("Orthanc", "/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/local/bin/Orthanc")
PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
START_TIMEOUT_SECONDS = 30.0
# loopback only: never through a proxy the environment may name
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_orthanc_binary() -> str | None:
    """$ORTHANC_BINARY, else Orthanc on PATH or where the Debian package puts it (/usr/sbin, not on a user's PATH)."""
    configured = os.environ.get("ORTHANC_BINARY")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def find_dicomweb_plugin() -> str | None:
    folders = [os.environ["ORTHANC_PLUGINS"]] if os.environ.get("ORTHANC_PLUGINS") else []
    for folder in [*folders, *PLUGIN_FOLDERS]:
        path = Path(folder) / DICOMWEB_PLUGIN
        if path.exists():
            return str(path)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OrthancServer:
    """``with OrthancServer(tmp_path).start() as orthanc: ...`` (``start`` is also called by ``__enter__``)."""

    def __init__(self, workdir: Path, dicomweb: bool = True, aet: str = "ORTHANC", accept_all: bool = False,
                 config: dict | None = None):
        self.workdir = Path(workdir)
        self.dicomweb = dicomweb
        self.aet = aet
        self.accept_all = accept_all
        self.extra_config = dict(config or {})  # options beyond the defaults a test needs (e.g. refuse deflate)
        self.dicom_port = 0
        self.http_port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    def configuration(self) -> dict:
        storage = self.workdir / "storage"
        config = {
            "Name": f"DicomFidelity test {self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": self.accept_all,
            "Plugins": [],
        }
        if self.dicomweb:
            plugin = find_dicomweb_plugin()
            if plugin is None:
                raise RuntimeError(f"Orthanc's DICOMweb plugin ({DICOMWEB_PLUGIN}) was not found in "
                                   f"{', '.join(PLUGIN_FOLDERS)}; install it (apt-get install orthanc-dicomweb) or "
                                   "set $ORTHANC_PLUGINS")
            config["Plugins"] = [plugin]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        config.update(self.extra_config)
        return config

    def start(self) -> OrthancServer:
        if self.process is not None and self.process.poll() is None:
            return self
        binary = find_orthanc_binary()
        if binary is None:
            raise RuntimeError("the Orthanc binary was not found (looked for $ORTHANC_BINARY, 'Orthanc' on PATH, "
                               "/usr/sbin/Orthanc); install it with apt-get install orthanc orthanc-dicomweb")
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_problem = ""
        for _ in range(3):  # a free port may be taken between probing and Orthanc binding it: try fresh ones
            self.dicom_port, self.http_port = free_port(), free_port()
            while self.http_port == self.dicom_port:
                self.http_port = free_port()
            config_path = self.workdir / "orthanc.json"
            config_path.write_text(json.dumps(self.configuration(), indent=2))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen([binary, f"--logdir={self.workdir}", str(config_path)],
                                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.workdir)
            last_problem = self._wait_until_ready()
            if not last_problem:
                return self
            self.stop()
        raise RuntimeError(f"Orthanc did not start: {last_problem} (log: {self.log_path})")

    def _wait_until_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                return f"exited with code {self.process.returncode}: {' | '.join(tail)}"
            try:
                with OPENER.open(self.url + "/system", timeout=2) as response:
                    system = json.loads(response.read())
                if not self.dicomweb or "dicom-web" in json.dumps(self._get_json("/plugins")):
                    if system.get("DicomAet") == self.aet:
                        return ""
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        return f"its REST API did not answer within {START_TIMEOUT_SECONDS:.0f} s"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # REST helpers, for reading back what was stored
    def _get(self, path: str) -> bytes:
        with OPENER.open(self.url + path, timeout=60) as response:
            return response.read()

    def _get_json(self, path: str):
        return json.loads(self._get(path))

    def instances(self) -> list[str]:
        """Orthanc's identifiers of every stored instance."""
        return list(self._get_json("/instances"))

    def download(self, instance_id: str) -> bytes:
        """The instance's DICOM file as Orthanc stored it."""
        return self._get(f"/instances/{instance_id}/file")

    def instance_tags(self, instance_id: str) -> dict:
        """Main tags (SOPInstanceUID, SeriesInstanceUID, ...) of one instance, by keyword."""
        return self._get_json(f"/instances/{instance_id}/simplified-tags")

    def instance_metadata(self, instance_id: str) -> dict:
        """Orthanc's metadata of one instance (TransferSyntax, SopClassUid, RemoteAET, Origin, ...)."""
        return self._get_json(f"/instances/{instance_id}/metadata?expand")

    def find_instance(self, sop_instance_uid: str) -> str | None:
        request = urllib.request.Request(
            self.url + "/tools/lookup", data=sop_instance_uid.encode(), method="POST")
        with OPENER.open(request, timeout=60) as response:
            found = [item["ID"] for item in json.loads(response.read()) if item.get("Type") == "Instance"]
        return found[0] if found else None

    def _delete(self, path: str) -> None:
        OPENER.open(urllib.request.Request(self.url + path, method="DELETE"), timeout=60).close()

    def delete_instance(self, instance_id: str) -> None:
        self._delete(f"/instances/{instance_id}")

    def clear(self) -> None:
        """Delete every stored patient (between tests on one module-scoped server)."""
        for patient in self._get_json("/patients"):
            self._delete(f"/patients/{patient}")
