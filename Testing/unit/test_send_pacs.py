"""`segqa send` to a real Orthanc on loopback: every object we write, by C-STORE and by STOW-RS, read back through
Orthanc's REST API and decoded identical; LABELMAP falls back to BINARY where the peer lacks the SOP class, deflate
is transcoded where the peer refuses it; an unreachable destination is one error line. Every acknowledged object is
queried back (C-FIND, QIDO-RS): one the server acknowledged and dropped fails the send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from servers.orthanc import OrthancServer, free_port
from servers.stow_stub import SOP_CLASS_NOT_SUPPORTED, StowStub

from DicomFidelityCommonLib.pacs import (
    BINARY_SEG_SOP_CLASS,
    LABELMAP_SEG_SOP_CLASS,
    PacsError,
    Protocol,
    parse_destination,
)
from DicomFidelityCommonLib.pacs.dimse import requested_contexts
from DicomFidelityCommonLib.pacs.objects import read_object_header
from SegmentationQALib import cli
from SegmentationQALib.seg.read import load_seg
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"
DCMQI = "dcmqi/segmentations"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
# our calling AE title registered, as a PACS administrator would, so Orthanc answers our C-FIND (it refuses queries
# from unknown AE titles by default; test_unqueryable_destination_is_a_warning keeps that default)
KNOWN_SENDER = {"DicomModalities": {"dicomfidelity": ["DICOMFIDELITY", "127.0.0.1", 104]}}
DROP_RTDOSE_LUA = """function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.Modality ~= 'RTDOSE'
end
"""


def run_segqa(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    json_path = Path(argv[argv.index("--json") + 1]) if "--json" in argv else None
    code = cli.main(argv)
    err = capsys.readouterr().err
    document = json.loads(json_path.read_text()) if json_path and json_path.exists() else None
    return code, document, err


@pytest.fixture(scope="module")
def outputs(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Every kind of object we write, made by our own commands from the real data."""
    root = tmp_path_factory.mktemp("outputs")
    totalseg = shared_data / TOTALSEG
    assert cli.main(["export-seg", "--segmentation", str(totalseg / "example_seg_fast_force_split.nii.gz"),
                     "--reference", str(totalseg / "example_ct.nii.gz"), "--export-reference",
                     "--output-dir", str(root / "labelmap"), "--quiet"]) == 0
    reference = root / "labelmap" / "reference"
    assert cli.main(["export-seg", "--segmentation", str(totalseg / "example_seg_fast_force_split.nii.gz"),
                     "--reference", str(reference), "--seg-type", "binary", "--output-dir", str(root / "binary"),
                     "--quiet"]) == 0
    assert cli.main(["export-rtstruct", "--segmentation", str(shared_data / DCMQI / "liver.dcm"),
                     "--reference", str(shared_data / DCMQI / "ct-3slice"), "--output-dir", str(root / "rtstruct"),
                     "--quiet"]) == 0
    from DoseAlignmentLib import cli as dose_cli

    sample = shared_data / "dicompyler-sample"
    assert dose_cli.main(["resample", "--dose", str(sample / "rtdose.dcm"), "--reference", str(sample),
                          "--output", str(root / "dose" / "dose.nrrd"), "--rtdose-output",
                          str(root / "dose" / "rtdose.dcm"), "--quiet"]) == 0
    found = {
        "labelmap": next((root / "labelmap").glob("*.seg.dcm")),
        "binary": next((root / "binary").glob("*.seg.dcm")),
        "rtstruct": next((root / "rtstruct").glob("*.dcm")),
        "rtdose": root / "dose" / "rtdose.dcm",
        "reference": reference,
    }
    labelmap = pydicom.dcmread(found["labelmap"], stop_before_pixels=True)
    assert labelmap.SOPClassUID == LABELMAP_SEG_SOP_CLASS
    assert labelmap.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian  # the default we write
    assert pydicom.dcmread(found["binary"], stop_before_pixels=True).SOPClassUID == BINARY_SEG_SOP_CLASS
    assert len(list(reference.iterdir())) == 112
    return found


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc with its defaults (LABELMAP Segmentation Storage is not among its SOP classes), our AE title known."""
    with OrthancServer(tmp_path_factory.mktemp("orthanc"), config=KNOWN_SENDER) as server:
        yield server


@pytest.fixture
def empty_orthanc(orthanc):
    orthanc.clear()
    assert orthanc.instances() == []
    return orthanc


def stored(server: OrthancServer, sop_instance_uid: str, folder: Path) -> Path:
    """The instance read back through Orthanc's REST API, as a file."""
    instance = server.find_instance(sop_instance_uid)
    assert instance is not None, f"{sop_instance_uid} is not in Orthanc"
    path = folder / f"{sop_instance_uid}.dcm"
    path.write_bytes(server.download(instance))
    return path


def assert_same_segments(original: Path, received: Path) -> None:
    """Same segments (descriptions and every voxel, in patient space) through our reader."""
    a, b = load_seg(original), load_seg(received)
    assert [s.name for s in a.layered.segments] == [s.name for s in b.layered.segments]
    for sa, sb in zip(a.layered.segments, b.layered.segments):
        assert sa.terminology == sb.terminology and np.allclose(sa.color, sb.color, atol=1 / 255)
        assert sa.algorithm_type == sb.algorithm_type
    on_a, changed = b.layered.resampled_to(a.layered.geometry)
    assert changed == 0
    assert a.layered.voxel_counts() == b.layered.voxel_counts()
    for index in range(len(a.layered.segments)):
        assert np.array_equal(a.layered.mask(index), on_a.mask(index)), a.layered.segments[index].name
    assert a.frame_of_reference_uid == b.frame_of_reference_uid
    assert a.referenced_series_uid == b.referenced_series_uid


def assert_same_rtdose(original: Path, received: Path) -> None:
    a, b = pydicom.dcmread(original), pydicom.dcmread(received)
    assert np.array_equal(a.pixel_array, b.pixel_array)
    assert a.DoseGridScaling == b.DoseGridScaling and a.DoseUnits == b.DoseUnits
    assert list(a.GridFrameOffsetVector) == list(b.GridFrameOffsetVector)
    assert list(a.ImagePositionPatient) == list(b.ImagePositionPatient)


def assert_same_rtstruct(original: Path, received: Path) -> None:
    a, b = pydicom.dcmread(original), pydicom.dcmread(received)
    contours_a = [[list(c.ContourData) for c in roi.ContourSequence] for roi in a.ROIContourSequence]
    contours_b = [[list(c.ContourData) for c in roi.ContourSequence] for roi in b.ROIContourSequence]
    assert contours_a == contours_b and sum(map(len, contours_a)) > 0
    assert [r.ROIName for r in a.StructureSetROISequence] == [r.ROIName for r in b.StructureSetROISequence]


def assert_same_series(original_folder: Path, server: OrthancServer, folder: Path) -> None:
    files = sorted(original_folder.iterdir())
    for path in files[:: max(1, len(files) // 12)] + files[-1:]:  # a dozen slices across the series
        a = pydicom.dcmread(path)
        b = pydicom.dcmread(stored(server, a.SOPInstanceUID, folder))
        assert np.array_equal(a.pixel_array, b.pixel_array) and a.ImagePositionPatient == b.ImagePositionPatient


def send_everything(outputs, destination: str, tmp_path, capsys, *extra) -> dict:
    json_path = tmp_path / "send.json"
    files = [outputs[k] for k in ("labelmap", "reference", "binary", "rtstruct", "rtdose")]
    code, document, err = run_segqa(["send", *map(str, files), "--to", destination, "--json", str(json_path),
                                     "--quiet", *extra], capsys)
    assert code == 0, err
    assert document["ok"] and document["errors"] == [] and document["command"] == "send"
    assert document["sent"] == 116 and document["failed"] == 0
    assert document["verified"] == 116 and document["verification_problem"] == ""
    assert not [w for w in document["warnings"] if "not verified" in w]
    assert all(o["verified"] is True for o in document["objects"]) and "verify" in document["timings_seconds"]
    assert {"read_headers", "send", "total"} <= set(document["timings_seconds"])
    return document


def by_path(document: dict) -> dict[str, dict]:
    return {o["path"]: o for o in document["objects"]}


def check_read_back(outputs, server: OrthancServer, document: dict, tmp_path: Path) -> None:
    objects = by_path(document)
    back = tmp_path / "back"
    back.mkdir()
    labelmap = objects[str(outputs["labelmap"])]
    assert_same_segments(outputs["labelmap"], stored(server, labelmap["sent_sop_instance_uid"], back))
    assert_same_segments(outputs["binary"], stored(server, objects[str(outputs["binary"])]["sop_instance_uid"], back))
    assert_same_rtdose(outputs["rtdose"], stored(server, objects[str(outputs["rtdose"])]["sop_instance_uid"], back))
    assert_same_rtstruct(outputs["rtstruct"],
                         stored(server, objects[str(outputs["rtstruct"])]["sop_instance_uid"], back))
    assert_same_series(outputs["reference"], server, back)
    assert len(server.instances()) == 116


def test_cstore_sends_every_output_and_labelmap_falls_back_to_binary(outputs, empty_orthanc, tmp_path, capsys):
    server = empty_orthanc
    document = send_everything(outputs, f"{server.aet}@127.0.0.1:{server.dicom_port}", tmp_path, capsys)
    assert document["protocol"] == "dimse" and document["calling_aet"] == "DICOMFIDELITY"
    objects = by_path(document)
    labelmap = objects[str(outputs["labelmap"])]
    assert labelmap["action"] == "converted-to-binary" and labelmap["sent_sop_class_uid"] == BINARY_SEG_SOP_CLASS
    assert labelmap["sent_transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian  # Orthanc takes deflate
    assert document["actions"]["converted-to-binary"] == 1
    for key in ("binary", "rtstruct", "rtdose"):
        assert objects[str(outputs[key])]["action"] == "as-is", key
    # the UID scheme: a new instance in a new series, in the study of the CT it references
    original = pydicom.dcmread(outputs["labelmap"], stop_before_pixels=True)
    instance = server.find_instance(labelmap["sent_sop_instance_uid"])
    received = pydicom.dcmread(stored(server, labelmap["sent_sop_instance_uid"], tmp_path), stop_before_pixels=True)
    assert received.SOPClassUID == BINARY_SEG_SOP_CLASS and received.SegmentationType == "BINARY"
    assert received.SOPInstanceUID != original.SOPInstanceUID
    assert received.SeriesInstanceUID == labelmap["sent_series_instance_uid"] != original.SeriesInstanceUID
    assert received.StudyInstanceUID == original.StudyInstanceUID
    assert received.FrameOfReferenceUID == original.FrameOfReferenceUID
    assert (received.ReferencedSeriesSequence[0].SeriesInstanceUID
            == original.ReferencedSeriesSequence[0].SeriesInstanceUID)
    assert received.SeriesDescription == original.SeriesDescription
    assert server.instance_metadata(instance)["RemoteAET"] == "DICOMFIDELITY"
    assert server.instance_metadata(instance)["SopClassUid"] == BINARY_SEG_SOP_CLASS
    check_read_back(outputs, server, document, tmp_path)


def test_stow_rs_sends_every_output(outputs, empty_orthanc, tmp_path, capsys):
    server = empty_orthanc
    document = send_everything(outputs, server.dicomweb_url, tmp_path, capsys)
    assert document["protocol"] == "stow-rs" and document["actions"]["as-is"] == 116
    labelmap = by_path(document)[str(outputs["labelmap"])]
    assert labelmap["sent_sop_class_uid"] == LABELMAP_SEG_SOP_CLASS  # Orthanc stores any class over HTTP
    assert labelmap["sent_transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian
    check_read_back(outputs, server, document, tmp_path)


@pytest.mark.parametrize("accept_all", [True, False])
def test_cstore_transcodes_deflate_for_a_peer_that_refuses_it(outputs, tmp_path, capsys, accept_all):
    """A peer without deflate: with LABELMAP (any SOP class accepted) the SEG goes as LABELMAP, re-encoded; without
    it, as a BINARY SEG (written deflated like its source), re-encoded too."""
    config = {"DeflatedTransferSyntaxAccepted": False}
    with OrthancServer(tmp_path / "orthanc", dicomweb=False, aet="NODEFLATE", accept_all=accept_all,
                       config=config) as server:
        json_path = tmp_path / "send.json"
        code, document, err = run_segqa(["send", str(outputs["labelmap"]), str(outputs["reference"]), "--to",
                                         f"NODEFLATE@127.0.0.1:{server.dicom_port}", "--aet", "QA_SENDER",
                                         "--json", str(json_path), "--quiet"], capsys)
        assert code == 0, err
        sent = by_path(document)[str(outputs["labelmap"])]
        assert sent["transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian
        assert sent["sent_transfer_syntax_uid"] == ExplicitVRLittleEndian
        if accept_all:
            assert sent["action"] == "transcoded" and sent["sent_sop_class_uid"] == LABELMAP_SEG_SOP_CLASS
            assert sent["sent_sop_instance_uid"] == sent["sop_instance_uid"]
        else:
            assert sent["action"] == "converted-to-binary" and sent["sent_sop_class_uid"] == BINARY_SEG_SOP_CLASS
        instance = server.find_instance(sent["sent_sop_instance_uid"])
        metadata = server.instance_metadata(instance)
        assert metadata["TransferSyntax"] == ExplicitVRLittleEndian and metadata["RemoteAET"] == "QA_SENDER"
        assert_same_segments(outputs["labelmap"], stored(server, sent["sent_sop_instance_uid"], tmp_path))


@pytest.mark.parametrize("refused", ["sop-class", "transfer-syntax"])
def test_stow_rs_retries_what_the_server_refuses(outputs, empty_orthanc, tmp_path, capsys, refused):
    """HTTP cannot negotiate: a LABELMAP SEG the server refuses is sent again as BINARY; a deflated object whose
    syntax it refuses, again as Explicit VR Little Endian."""
    server = empty_orthanc
    classes = {LABELMAP_SEG_SOP_CLASS} if refused == "sop-class" else set()
    syntaxes = {DeflatedExplicitVRLittleEndian} if refused == "transfer-syntax" else set()
    with StowStub(server.url, refused_classes=classes, refused_syntaxes=syntaxes) as stub:
        code, document, err = run_segqa(["send", str(outputs["labelmap"]), str(outputs["reference"]),
                                         str(outputs["rtdose"]), "--to", stub.url, "--json",
                                         str(tmp_path / "s.json"), "--quiet"], capsys)
    assert code == 0, err
    assert document["sent"] == 114 and document["failed"] == 0 and document["actions"]["as-is"] == 113
    sent = by_path(document)[str(outputs["labelmap"])]
    refusals = [r for r in stub.received if not r[2]]
    if refused == "sop-class":
        assert sent["action"] == "converted-to-binary" and sent["sent_sop_class_uid"] == BINARY_SEG_SOP_CLASS
        assert refusals == [(LABELMAP_SEG_SOP_CLASS, DeflatedExplicitVRLittleEndian, False)]
        assert sent["sent_sop_instance_uid"] != sent["sop_instance_uid"]
    else:
        assert sent["action"] == "transcoded" and sent["sent_sop_class_uid"] == LABELMAP_SEG_SOP_CLASS
        assert sent["sent_transfer_syntax_uid"] == ExplicitVRLittleEndian
        assert sent["sent_sop_instance_uid"] == sent["sop_instance_uid"]
    assert len(refusals) == 1 and len(stub.received) == 115
    assert_same_segments(outputs["labelmap"], stored(server, sent["sent_sop_instance_uid"], tmp_path))
    assert len(server.instances()) == 114


def test_stow_rs_reports_what_stays_refused(outputs, empty_orthanc, tmp_path, capsys):
    server = empty_orthanc
    with StowStub(server.url, refused_classes={RT_DOSE_STORAGE}) as stub:
        code, document, err = run_segqa(["send", str(outputs["rtdose"]), str(outputs["rtstruct"]), "--to", stub.url,
                                         "--json", str(tmp_path / "s.json"), "--quiet"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {outputs['rtdose']}: not sent to ")
    dose = by_path(document)[str(outputs["rtdose"])]
    assert dose["action"] == "failed" and dose["status"] == SOP_CLASS_NOT_SUPPORTED
    assert f"0x{SOP_CLASS_NOT_SUPPORTED:04X}" in dose["problem"]
    assert by_path(document)[str(outputs["rtstruct"])]["action"] == "as-is"
    assert len(server.instances()) == 1


def test_labelmap_without_its_reference_series_is_one_clear_failure(outputs, empty_orthanc, tmp_path, capsys):
    """BINARY needs the CT headers: without them (not sent, no --reference) the SEG fails, the others still go."""
    server = empty_orthanc
    code, document, err = run_segqa(["send", str(outputs["labelmap"]), str(outputs["rtdose"]), "--to",
                                     f"ORTHANC@127.0.0.1:{server.dicom_port}", "--json",
                                     str(tmp_path / "s.json"), "--quiet"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {outputs['labelmap']}: ")
    assert "--reference" in lines[0] and "Traceback" not in err
    assert document["ok"] is False and document["sent"] == 1 and document["failed"] == 1
    assert len(server.instances()) == 1
    code, document, err = run_segqa(["send", str(outputs["labelmap"]), "--reference", str(outputs["reference"]),
                                     "--to", f"ORTHANC@127.0.0.1:{server.dicom_port}", "--json",
                                     str(tmp_path / "s2.json"), "--keep-converted", str(tmp_path / "kept"),
                                     "--quiet"], capsys)
    assert code == 0, err
    kept = document["outputs"]["converted"]
    assert len(kept) == 1 and read_object_header(kept[0]).sop_class_uid == BINARY_SEG_SOP_CLASS
    assert_dciodvfy_clean(kept[0])
    assert_same_segments(outputs["labelmap"], Path(kept[0]))


def test_export_seg_send(shared_data, empty_orthanc, tmp_path, capsys):
    server = empty_orthanc
    code, document, err = run_segqa([
        "export-seg", "--segmentation", str(shared_data / DCMQI / "liver.dcm"), "--reference",
        str(shared_data / DCMQI / "ct-3slice"), "--output-dir", str(tmp_path / "out"), "--send",
        f"ORTHANC@127.0.0.1:{server.dicom_port}", "--json", str(tmp_path / "e.json"), "--quiet"], capsys)
    assert code == 0, err
    assert document["seg_type"] == "labelmap" and document["send"]["sent"] == 1
    assert document["send"]["objects"][0]["action"] == "converted-to-binary"  # CT taken from --reference
    assert "send" in document["timings_seconds"]
    received = stored(server, document["send"]["objects"][0]["sent_sop_instance_uid"], tmp_path)
    assert_same_segments(Path(document["seg_path"]), received)


def assert_dropped_dose_fails(document: dict, code: int, err: str, outputs) -> None:
    """The RTDOSE was acknowledged (status success) but is not on the server: the send fails, naming it."""
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {outputs['rtdose']}: not sent to ") and "queried back" in lines[0]
    dose, structures = by_path(document)[str(outputs["rtdose"])], by_path(document)[str(outputs["rtstruct"])]
    assert dose["verified"] is False and dose["action"] == "as-is" and dose["status"] in (0, None)
    assert structures["verified"] is True and structures["problem"] == ""
    assert document["sent"] == 1 and document["failed"] == 1 and document["verified"] == 1


def test_cstore_object_the_server_drops_fails_verification(outputs, tmp_path, capsys):
    """Orthanc 1.10 answers C-STORE 0x0000 for an instance its ReceivedInstanceFilter drops: only the query shows
    it is not there."""
    script = tmp_path / "drop.lua"
    script.write_text(DROP_RTDOSE_LUA)
    with OrthancServer(tmp_path / "orthanc", dicomweb=False, config={**KNOWN_SENDER, "LuaScripts": [str(script)]}) \
            as server:
        code, document, err = run_segqa(["send", str(outputs["rtdose"]), str(outputs["rtstruct"]), "--to",
                                         f"ORTHANC@127.0.0.1:{server.dicom_port}", "--json", str(tmp_path / "s.json"),
                                         "--quiet"], capsys)
        assert by_path(document)[str(outputs["rtdose"])]["status"] == 0  # acknowledged as stored ...
        assert_dropped_dose_fails(document, code, err, outputs)
        assert len(server.instances()) == 1  # ... and not there


def test_stow_rs_object_the_server_drops_fails_verification(outputs, empty_orthanc, tmp_path, capsys):
    with StowStub(empty_orthanc.url, dropped_classes={RT_DOSE_STORAGE}) as stub:
        code, document, err = run_segqa(["send", str(outputs["rtdose"]), str(outputs["rtstruct"]), "--to", stub.url,
                                         "--json", str(tmp_path / "s.json"), "--quiet"], capsys)
    assert_dropped_dose_fails(document, code, err, outputs)
    assert len(empty_orthanc.instances()) == 1


def test_unqueryable_destination_is_a_warning(outputs, tmp_path, capsys):
    """Orthanc's default refuses C-FIND from an AE title it does not know: the objects are sent, and the result
    says they could not be verified (a warning, exit 0). ``--no-verify`` does not ask."""
    with OrthancServer(tmp_path / "orthanc", dicomweb=False) as server:
        destination = f"ORTHANC@127.0.0.1:{server.dicom_port}"
        code, document, err = run_segqa(["send", str(outputs["rtdose"]), "--to", destination, "--json",
                                         str(tmp_path / "s.json"), "--quiet"], capsys)
        assert code == 0 and document["sent"] == 1 and document["verified"] == 0, err
        assert "refused" in document["verification_problem"]
        assert [w for w in document["warnings"] if w.startswith(f"{destination}: not verified: ")]
        assert document["objects"][0]["verified"] is None
        code, document, err = run_segqa(["send", str(outputs["rtdose"]), "--to", destination, "--no-verify",
                                         "--json", str(tmp_path / "s2.json"), "--quiet"], capsys)
        assert code == 0 and document["warnings"] == [] and document["objects"][0]["verified"] is None
        assert "verify" not in document["timings_seconds"] and len(server.instances()) == 1


@pytest.mark.parametrize("kind", ["dimse", "stow"])
def test_unreachable_destination_is_one_error_line(outputs, tmp_path, capsys, kind):
    port = free_port()  # a port nobody listens on
    destination = f"PACS@127.0.0.1:{port}" if kind == "dimse" else f"http://127.0.0.1:{port}/dicom-web"
    code, document, err = run_segqa(["send", str(outputs["rtdose"]), "--to", destination, "--send-timeout", "5",
                                     "--json", str(tmp_path / "s.json"), "--quiet"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and lines == [lines[0]] and lines[0].startswith(f"error: {destination}: cannot connect")
    assert document == {"command": "send", "ok": False, "outputs": {}, "warnings": [], "timings_seconds": {},
                        "errors": [lines[0][len("error: "):]]}
    # and as the installed command: no traceback, nothing but the one line
    result = subprocess.run([str(Path(sys.executable).with_name("segqa")), "send", str(outputs["rtdose"]), "--to",
                             destination, "--quiet"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [lines[0]], result.stderr


@pytest.mark.parametrize("text", ["ORTHANC@127.0.0.1", "127.0.0.1:4242", "ORTHANC@host:70000",
                                  "A_TITLE_LONGER_THAN_16@127.0.0.1:4242", "ftp://127.0.0.1/dicom-web"])
def test_bad_destinations_are_refused(text):
    with pytest.raises(PacsError, match="destination|AE title|port"):
        parse_destination(text)


def test_destinations_and_contexts(outputs):
    dimse = parse_destination("ORTHANC@[::1]:4242")
    assert (dimse.protocol, dimse.aet, dimse.host, dimse.port, dimse.is_loopback) == \
        (Protocol.DIMSE, "ORTHANC", "::1", 4242, True)
    web = parse_destination("https://pacs.example.org/dicom-web/")
    assert web.protocol == Protocol.STOW_RS and web.url == "https://pacs.example.org/dicom-web"
    assert not web.is_loopback
    headers = [read_object_header(outputs["labelmap"]), read_object_header(outputs["rtdose"])]
    contexts = requested_contexts(headers, can_convert=True)
    assert (LABELMAP_SEG_SOP_CLASS, [DeflatedExplicitVRLittleEndian]) in contexts  # its own syntax, alone
    assert (BINARY_SEG_SOP_CLASS, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"]) in contexts  # the fallback
    assert not any(c[0] == BINARY_SEG_SOP_CLASS for c in requested_contexts(headers, can_convert=False))
    assert CT_IMAGE_STORAGE not in {c[0] for c in contexts}


def test_association_rejected_for_a_wrong_called_aet(outputs, tmp_path, capsys):
    with OrthancServer(tmp_path / "orthanc", dicomweb=False, config={"DicomCheckCalledAet": True}) as server:
        destination = f"NOT_ORTHANC@127.0.0.1:{server.dicom_port}"
        code, _, err = run_segqa(["send", str(outputs["rtdose"]), "--to", destination, "--quiet"], capsys)
        assert code == 1 and err.strip() == (f"error: {destination}: the peer rejected the association (check the "
                                             "called and calling AE titles)")
        assert server.instances() == []
        assert run_segqa(["send", str(outputs["rtdose"]), "--to", f"ORTHANC@127.0.0.1:{server.dicom_port}",
                          "--quiet"], capsys)[0] == 0
        assert len(server.instances()) == 1


def test_a_missing_network_package_is_named_with_how_to_install_it(monkeypatch):
    from DicomFidelityCommonLib import dependencies
    from DicomFidelityCommonLib.errors import MissingDependencyError
    from DicomFidelityCommonLib.pacs import require_network_package

    monkeypatch.setattr(dependencies, "is_importable", lambda module: module != "pynetdicom")
    with pytest.raises(MissingDependencyError, match=r"missing package pynetdicom; install with pip install "
                                                     r"'pynetdicom>=2\.1'"):
        require_network_package(Protocol.DIMSE)
    require_network_package(Protocol.STOW_RS)  # dicomweb-client is there
