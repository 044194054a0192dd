"""RTSTRUCT part of the SegmentationQA logic: MRML nodes in, the rtstruct package does the work.

``SegmentationQAMRMLLogic`` owns one ``RtStructLogic`` (``logic.rtstruct``) and lends it its node conversions
(``layeredSegmentationFromNode``, ``segmentationNodeFromLayered``, ``geometryFromVolumeNode``,
``arrayFromVolumeNode``, ``referenceSeriesForVolume``). Imports no qt.
"""

from __future__ import annotations

import time
from pathlib import Path

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import ReferenceNotDicomError
from DicomFidelityCommonLib.mrml import FRAME_OF_REFERENCE_ATTRIBUTE, INSTANCE_UIDS_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.safe_write import OutputTransaction, safe_file_name
from SegmentationQALib.reference_series import PatientStudyInfo, ReferenceModality, write_reference_series
from SegmentationQALib.rtstruct import (
    FidelityResult,
    FidelityThresholds,
    HoleEncoding,
    ReferenceImages,
    RtStructCheckResult,
    RtStructExportOptions,
    RtStructExportResult,
    RtStructLoadResult,
    Verdict,
    check_rtstruct,
    check_rtstruct_fidelity,
    gate,
    load_reference,
    read_rtstruct,
    read_rtstruct_dataset,
    write_fidelity_report,
    write_rtstruct,
)


class RtStructLogic:
    """checkFidelity, export, load, checkFile: what the panel, the console and the CLI call (``logic.rtstruct``)."""

    def __init__(self, nodes):
        self.nodes = nodes  # the SegmentationQAMRMLLogic that converts nodes

    def reference(self, referenceVolumeNode=None, referenceDicomFolder=None, planesFromRtStruct=None):
        """(ReferenceImages or None, image array or None, image geometry): the planes contours go on.

        From a DICOM folder (rebuilt from ``planesFromRtStruct``'s contours when the series is incomplete), else
        from the volume node (DICOM instances, if it came from DICOM; planes only otherwise).
        """
        if referenceDicomFolder is not None:
            rtstruct = read_rtstruct_dataset(planesFromRtStruct) if planesFromRtStruct else None
            reference = load_reference(referenceDicomFolder, rtstruct)
            image = None
            if not reference.synthesized:
                image = dicom_series.read_image_series(referenceDicomFolder).pixel_array()
            return reference, image, reference.geometry
        if referenceVolumeNode is None:
            raise ReferenceNotDicomError("no reference: give a reference volume or a DICOM folder")
        geometry = self.nodes.geometryFromVolumeNode(referenceVolumeNode)
        image = self.nodes.arrayFromVolumeNode(referenceVolumeNode)
        series = self.nodes.referenceSeriesForVolume(referenceVolumeNode)
        if series is not None:
            return ReferenceImages.from_series(series), image, geometry
        return None, image, geometry

    def checkFrameOfReference(self, segmentationNode, reference: ReferenceImages | None, referenceVolumeNode,
                              referenceDicomFolder) -> None:
        """Contours from another frame of reference would land anywhere: refuse them as the SEG export does."""
        if reference is not None:
            where = referenceDicomFolder or (referenceVolumeNode.GetName() if referenceVolumeNode else "reference")
            self.nodes.checkFrameOfReference(segmentationNode, reference.frame_of_reference_uid, where)

    def checkFidelity(self, segmentationNode, referenceVolumeNode=None, referenceDicomFolder=None,
                              thresholds: FidelityThresholds | None = None, reportDir=None,
                              planesFromRtStruct=None, progress: ProgressCallback | None = None,
                              holes: HoleEncoding | str = HoleEncoding.SEPARATE) -> FidelityResult:
        """Per segment, what an RTSTRUCT export on the reference planes with ``holes`` encoding keeps (the
        segmentation on its own grid)."""
        start = time.perf_counter()
        progress = progress or no_progress
        reference, image, geometry = self.reference(referenceVolumeNode, referenceDicomFolder, planesFromRtStruct)
        self.checkFrameOfReference(segmentationNode, reference, referenceVolumeNode, referenceDicomFolder)
        warnings: list[str] = []
        layered = self.nodes.layeredSegmentationFromNode(segmentationNode, None, warnings)
        readTime = time.perf_counter() - start
        result = check_rtstruct_fidelity(layered, reference.geometry if reference else geometry, thresholds,
                                         lambda f, m: progress(0.9 * f, m), holes=holes)
        result.warnings = warnings + (reference.warnings if reference else []) + result.warnings
        result.timings["read_inputs"] = readTime
        if reportDir is not None:
            t = time.perf_counter()
            write_fidelity_report(result, reportDir, image, geometry)
            result.timings["report"] = time.perf_counter() - t
        result.timings["in_process_total"] = time.perf_counter() - start
        progress(1.0, "fidelity check done")
        return result

    @staticmethod
    def verdictTable(result: FidelityResult) -> list[dict]:
        """Rows for the panel's verdict table."""
        return result.verdict_table()

    def export(self, segmentationNode, referenceVolumeNode=None, outputDir=".", referenceDicomFolder=None,
                       exportReference: bool = False, options: RtStructExportOptions | None = None,
                       thresholds: FidelityThresholds | None = None, failOn: Verdict | None = None,
                       planesFromRtStruct=None, referenceModality: ReferenceModality = ReferenceModality.CT,
                       patientInfo: PatientStudyInfo | None = None, fileName: str | None = None,
                       progress: ProgressCallback | None = None) -> tuple[RtStructExportResult, FidelityResult]:
        """Check, then write the RTSTRUCT from the very contours checked. ``failOn`` refuses the export (raises
        FidelityGateError, nothing written) when a segment is that bad. A reference volume not loaded from DICOM
        is written as a new series into ``outputDir/reference`` with ``exportReference``. ``options.holes`` (default
        separate) says how holes are written: separate inner contours or keyholes."""
        start = time.perf_counter()
        progress = progress or no_progress
        options = options or RtStructExportOptions()
        outputDir = Path(outputDir)
        reference, image, geometry = self.reference(referenceVolumeNode, referenceDicomFolder, planesFromRtStruct)
        if reference is None and not exportReference:
            raise ReferenceNotDicomError(
                f"reference volume {referenceVolumeNode.GetName()!r} was not loaded from DICOM, and an RTSTRUCT must "
                "reference DICOM images; export it as a DICOM series too (--export-reference / exportReference=True) "
                "or give the DICOM folder it came from")
        self.checkFrameOfReference(segmentationNode, reference, referenceVolumeNode, referenceDicomFolder)
        warnings: list[str] = []
        layered = self.nodes.layeredSegmentationFromNode(segmentationNode, None, warnings)
        fidelity = check_rtstruct_fidelity(layered, reference.geometry if reference else geometry, thresholds,
                                           lambda f, m: progress(0.5 * f, m), holes=options.holes)
        fidelity.warnings = warnings + fidelity.warnings
        gate(fidelity, failOn)
        series = None
        with OutputTransaction(outputDir) as outputs:
            if reference is None:
                series = write_reference_series(image, geometry, outputs.path("reference"), referenceModality,
                                                patientInfo, lambda f, m: progress(0.5 + 0.2 * f, m))
                reference = ReferenceImages.from_series(series)
                if not reference.geometry.is_close(fidelity.reference_geometry, atol_mm=1e-4):
                    # The writer may store the slices in the other order; contour again on the written planes.
                    fidelity = check_rtstruct_fidelity(layered, reference.geometry, thresholds, holes=options.holes)
            name = fileName or f"{safe_file_name(segmentationNode.GetName())}.rtstruct.dcm"
            result = write_rtstruct(layered, reference, outputs.path(name), options, fidelity.contours,
                                    lambda f, m: progress(0.7 + 0.3 * f, m))
            published = outputs.publish()
        result.path = str(published[name])
        if series is not None:
            result.reference_paths = [str(published["reference"] / p.name) for p in series.paths]
            referenceVolumeNode.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(series.sop_instance_uids))
        result.warnings = fidelity.warnings + result.warnings
        result.timings["fidelity_check"] = fidelity.timings.get("total", 0.0)
        result.timings["in_process_total"] = time.perf_counter() - start
        progress(1.0, "done")
        return result, fidelity

    def load(self, path, referenceDicomFolder, name: str | None = None,
                     progress: ProgressCallback | None = None) -> tuple[object, RtStructLoadResult]:
        """Read an RTSTRUCT (even-odd, voxel-centre inclusion) into a new segmentation node on the CT planes."""
        loaded = read_rtstruct(path, referenceDicomFolder, progress)
        t = time.perf_counter()
        node = self.nodes.segmentationNodeFromLayered(loaded.segmentation, name or Path(path).name.split(".")[0])
        if loaded.reference.frame_of_reference_uid:
            node.SetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE, loaded.reference.frame_of_reference_uid)
        node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))  # named by checkFrameOfReference, as for a loaded SEG
        loaded.timings["create_segmentation_node"] = time.perf_counter() - t
        return node, loaded

    def checkFile(self, path, referenceDicomFolder) -> RtStructCheckResult:
        """Check an existing RTSTRUCT against its CT (planes, closure, self-intersection, duplicates, frame)."""
        return check_rtstruct(path, referenceDicomFolder)
