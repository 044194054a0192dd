"""MRML-facing logic of SegmentationQA: segmentation/volume nodes <-> core arrays and geometry, then core does the work.

Imports slicer and vtk, never qt: it runs inside the Slicer app, in `Slicer --no-main-window`, and in plain Python
with the slicer-core wheel. The scene and the Segmentations module logic are injected; inside the app they default
to ``slicer.mrmlScene`` and ``slicer.modules.segmentations.logic()``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import slicer
import vtk

from DicomFidelityCommonLib.dependencies import require
from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import (
    DicomFidelityError,
    FrameOfReferenceMismatchError,
    InvalidInputFileError,
    MissingTagError,
    OverlapError,
    ReferenceNotDicomError,
    WrongModalityError,
)
from DicomFidelityCommonLib.geometry import LPS_TO_RAS, VolumeGeometry
from DicomFidelityCommonLib.mrml import (
    FRAME_OF_REFERENCE_ATTRIBUTE,
    INSTANCE_UIDS_ATTRIBUTE,
    SOURCE_FILE_ATTRIBUTE,
    arrayFromVolumeNode,
    fillVolumeNode,
    geometryFromVolumeNode,
    imageArray,
    loadVolumeFile,
    orientedImageFromArray,
    orientedImageGeometry,
    parentTransformToWorldRas,
)
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.runtime import with_paused_gc
from DicomFidelityCommonLib.safe_write import OutputTransaction, safe_file_name
from DicomFidelityCommonLib.volume_files import check_image_header, write_image
from SegmentationQALib.label_volume import (
    LABEL_VOLUME_SUFFIXES,
    SEGMENTATION_SUFFIXES,
    read_label_volume,
    volume_suffix,
)
from SegmentationQALib.reference_series import PatientStudyInfo, ReferenceModality, write_reference_series
from SegmentationQALib.seg.options import SegExportOptions, SegExportResult, SegLoadResult
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import write_seg
from SegmentationQALib.seg_nrrd import ALGORITHM_NAME_TAG, ALGORITHM_TYPE_TAG, write_seg_nrrd
from SegmentationQALib.segmentation import LayeredSegmentation, Segment, SegmentTerminology


class SegmentationQAMRMLLogic:
    """Everything the panel, the console and the CLI do, on MRML nodes."""

    def __init__(self, scene=None, segmentationsLogic=None):
        require()  # a missing package is one clear error here, not a missing method later
        from SegmentationQALib.rtstruct_logic import RtStructLogic  # needs scikit-image, scipy, shapely

        self.rtstruct = RtStructLogic(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        if segmentationsLogic is None:
            modules = getattr(slicer, "modules", None)
            if modules is not None and hasattr(modules, "segmentations"):
                segmentationsLogic = modules.segmentations.logic()
            else:  # slicer-core wheel: converter rules exist only once a module logic has the scene
                segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()
                segmentationsLogic.SetMRMLScene(self.scene)
        self.segmentationsLogic = segmentationsLogic

    # ---------------------------------------------------------------- files <-> nodes
    def loadVolumeFile(self, path, name: str | None = None):
        """Load an image file (NRRD, NIfTI, ...) as a scalar volume node."""
        return loadVolumeFile(self.scene, path, name=name)

    def volumeNodeFromArray(self, array: np.ndarray, geometry: VolumeGeometry, name: str = "Volume",
                            className: str = "vtkMRMLScalarVolumeNode"):
        return fillVolumeNode(self.scene.AddNewNodeByClass(className, name), array, geometry)

    def geometryFromVolumeNode(self, volumeNode) -> VolumeGeometry:
        """Where the volume is in the world (its parent transforms applied): the grid a SEG is exported on."""
        return geometryFromVolumeNode(volumeNode, inWorld=True)

    def arrayFromVolumeNode(self, volumeNode) -> np.ndarray:
        return arrayFromVolumeNode(volumeNode)

    def loadSegmentationFile(self, path, referenceVolumeNode=None, name: str | None = None, labels=None,
                             warnings: list[str] | None = None):
        """Load .seg.nrrd (overlaps kept), a label volume (.nrrd, .nii.gz: one segment per value) or a DICOM SEG.

        ``labels`` describes a label volume's values (a file or a built-in map such as ``totalsegmentator:total``:
        SegmentationQALib.labels): names, colours, terminology; ``warnings`` gets what it does not cover.
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidInputFileError("no such file", path)
        suffix = volume_suffix(path)
        if labels is not None and suffix not in LABEL_VOLUME_SUFFIXES:
            raise WrongModalityError("--labels describes the values of a label volume (.nii.gz, .nrrd); this file "
                                     "carries its own segment descriptions", path)
        name = name or path.name.split(".")[0]
        if suffix in SEGMENTATION_SUFFIXES:
            check_image_header(path)  # teem aborts the process on a corrupt header; SimpleITK raises instead
            from SegmentationQALib.seg_nrrd import check_seg_nrrd

            check_seg_nrrd(path)  # ... and on lying sizes, a corrupt gzip stream, zero spacing, extents off the grid
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            storage.SetFileName(str(path))
            if (not storage.ReadData(node)
                    or node.GetSegmentation().GetNumberOfSegments() == 0 and not self._isNrrdSegmentation(path)):
                self.scene.RemoveNode(node)
                self.scene.RemoveNode(storage)
                raise InvalidInputFileError("cannot read as a Slicer segmentation (.seg.nrrd)", path)
            node.SetAndObserveStorageNodeID(storage.GetID())
            return node
        if suffix in (".dcm", "") or dicom_series.is_dicom_file(path):
            node, _ = self.loadDicomSeg(path, name=name)
            return node
        if suffix in LABEL_VOLUME_SUFFIXES:
            layered, labelWarnings = read_label_volume(path, labels)
            if warnings is not None:
                warnings.extend(labelWarnings)
            return self.segmentationNodeFromLayered(layered, name)
        raise InvalidInputFileError("unknown segmentation file type (use .seg.nrrd, .nrrd, .nii.gz or a DICOM SEG)",
                                    path)

    @staticmethod
    def _isNrrdSegmentation(path: Path) -> bool:
        with open(path, "rb") as f:
            return f.read(4) == b"NRRD"

    def applyLabelDescription(self, segmentationNode, labels) -> list[str]:
        """Give the node's segments the names, colours, terminology and algorithm a label description has for their
        label values (a file or a built-in map, SegmentationQALib.labels); returns the one warning for values it
        does not describe. The panel's Apply button and ``export-seg --labels`` use the same description."""
        from SegmentationQALib.labels import label_segmentation

        layered = self.layeredSegmentationFromNode(segmentationNode, copy=False)
        described, warnings = label_segmentation(layered, labels)
        segmentation = segmentationNode.GetSegmentation()
        for before, after in zip(layered.segments, described.segments):
            segment = segmentation.GetSegment(before.segment_id)
            segment.SetName(after.name)
            segment.SetColor(*after.color)
            if after.terminology is not None:
                segment.SetTerminology(after.terminology.to_slicer())
            for tag, value in ((ALGORITHM_TYPE_TAG, after.algorithm_type), (ALGORITHM_NAME_TAG, after.algorithm_name)):
                if value:
                    segment.SetTag(tag, value)
        return warnings

    def removeSegmentationNode(self, segmentationNode) -> None:
        """Remove a segmentation node in one pass instead of one full-volume pass per segment.

        Slicer's vtkSegmentation::RemoveSegment (also run for every segment when a node is destroyed) first
        separates the segment's voxels from the shared labelmap: on 512x512x200 that is ~0.1 s per segment, so
        deleting or closing a 1000-segment segmentation takes about two minutes (and a CLI process that long to exit).
        Emptying the shared layers first makes every removal trivial (0.24 s for all 1000: teardown_speed.py).
        """
        segmentation = segmentationNode.GetSegmentation()
        for layerIndex in range(segmentation.GetNumberOfLayers()):
            image = segmentation.GetLayerDataObject(layerIndex)
            if image is not None:
                image.SetExtent(0, -1, 0, -1, 0, -1)
                image.AllocateScalars(image.GetScalarType(), 1)
        segmentation.RemoveAllSegments()
        if segmentationNode.GetScene() is not None:
            segmentationNode.GetScene().RemoveNode(segmentationNode)

    def segmentationNodeIds(self) -> set[str]:
        nodes = self.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        return {nodes.GetItemAsObject(index).GetID() for index in range(nodes.GetNumberOfItems())}

    def releaseSegmentations(self, keep: set[str] | None = None) -> None:
        """Remove the scene's segmentation nodes the fast way (see removeSegmentationNode), except those in
        ``keep`` (node IDs), e.g. a user's own nodes when a command ran in an open Slicer."""
        nodes = self.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for index in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(index)
            if not keep or node.GetID() not in keep:
                self.removeSegmentationNode(node)

    def saveSegmentationFile(self, segmentationNode, path, referenceVolumeNode=None) -> str:
        """Write .seg.nrrd (overlaps kept) or a label volume (.nrrd/.nii.gz; overlapping segments are an error)."""
        path = Path(path)
        suffix = volume_suffix(path)
        if suffix in SEGMENTATION_SUFFIXES:
            # One pass over the layers instead of Slicer's storage node (O(segments x voxels), see core/seg_nrrd).
            reference = self.geometryFromVolumeNode(referenceVolumeNode) if referenceVolumeNode is not None else None
            return write_seg_nrrd(self.layeredSegmentationFromNode(segmentationNode, reference, copy=False), path)
        if suffix in LABEL_VOLUME_SUFFIXES:
            reference = self.geometryFromVolumeNode(referenceVolumeNode) if referenceVolumeNode is not None else None
            layered = self.layeredSegmentationFromNode(segmentationNode, reference)
            if layered.has_overlap():
                raise OverlapError("segments overlap and a label volume holds one label per voxel; write .seg.nrrd",
                                   path)
            labels, _ = layered.as_single_labelmap()
            return str(write_image(path, layered.geometry.to_sitk(labels), compress=True))
        raise InvalidInputFileError("unknown output type (use .seg.nrrd, .nrrd or .nii.gz)", path)

    # ---------------------------------------------------------------- segmentation node <-> core model
    def layeredSegmentationFromNode(self, segmentationNode, referenceGeometry: VolumeGeometry | None = None,
                                    warnings: list[str] | None = None, copy: bool = True) -> LayeredSegmentation:
        """The node's shared labelmap layers as arrays, on ``referenceGeometry`` when given.

        Layers already on the reference grid are copied, or with ``copy=False`` returned as read-only views of the
        node's memory (for writers that finish before the node can change); layers on another extent are
        padded/cropped, others are resampled, and ``warnings`` gets how many voxels that changed.
        """
        segmentation = segmentationNode.GetSegmentation()
        binaryName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
        if segmentation.GetNumberOfSegments() == 0:
            from DicomFidelityCommonLib.errors import EmptySegmentationError

            raise EmptySegmentationError(f"segmentation {segmentationNode.GetName()!r} has no segments")
        if segmentation.GetSourceRepresentationName() != binaryName:
            segmentationNode.CreateBinaryLabelmapRepresentation()
        toWorld = LPS_TO_RAS @ parentTransformToWorldRas(segmentationNode) @ LPS_TO_RAS
        segmentOrder = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        layerArrays = []
        layerOfSegment = {}  # per layer, not per segment: GetLayerIndex searches every layer (1000 segments: 45 ms)
        for layerIndex in range(segmentation.GetNumberOfLayers()):
            for segmentId in segmentation.GetSegmentIDsForLayer(layerIndex):
                layerOfSegment[segmentId] = layerIndex
        target = referenceGeometry
        for layerIndex in range(segmentation.GetNumberOfLayers()):
            image = segmentation.GetLayerDataObject(layerIndex)
            geometry = orientedImageGeometry(image)
            geometry = VolumeGeometry(geometry.shape, toWorld @ geometry.affine_lps)
            array = imageArray(image)
            if target is None:
                target = self._segmentationReferenceGeometry(segmentationNode) or geometry
            layerArrays.append(self._onGrid(array, geometry, target, warnings, segmentationNode.GetName(), copy))
        segments = []
        for segmentId in segmentOrder:
            segment = segmentation.GetSegment(segmentId)
            terminology = SegmentTerminology.from_slicer(segment.GetTerminology()) if segment.HasTerminology() else None
            segments.append(Segment(
                name=segment.GetName(), layer=layerOfSegment[segmentId], label_value=segment.GetLabelValue(),
                color=tuple(segment.GetColor()), terminology=terminology, segment_id=segmentId,
                algorithm_type=_segmentTag(segment, ALGORITHM_TYPE_TAG),
                algorithm_name=_segmentTag(segment, ALGORITHM_NAME_TAG),
            ))
        return LayeredSegmentation(target, layerArrays, segments)

    def _segmentationReferenceGeometry(self, segmentationNode) -> VolumeGeometry | None:
        """The grid the segmentation was made on (its reference image geometry), if it says."""
        text = segmentationNode.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        if not text:
            return None
        image = slicer.vtkOrientedImageData()
        if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image, False):
            return None
        return orientedImageGeometry(image)

    @staticmethod
    def _onGrid(array, geometry: VolumeGeometry, target: VolumeGeometry, warnings, name, copy=True) -> np.ndarray:
        """Place a layer on ``target``: an exact paste when only the extent differs, else nearest resampling."""
        if geometry.is_close(target):
            if copy:
                return np.array(array, copy=True)
            view = array.view()
            view.flags.writeable = False
            return view
        offset = target.lps_to_index(geometry.origin_lps)
        sameAxes = np.allclose(geometry.affine_lps[:3, :3], target.affine_lps[:3, :3], atol=1e-6)
        if sameAxes and np.allclose(offset, np.round(offset), atol=1e-3):
            i0, j0, k0 = (int(v) for v in np.round(offset))
            result = np.zeros(target.shape, dtype=array.dtype)
            src = [slice(max(0, -o), min(n, t - o)) for o, n, t in zip((k0, j0, i0), array.shape, target.shape)]
            dst = [slice(max(0, o), max(0, o) + (s.stop - s.start)) for o, s in zip((k0, j0, i0), src)]
            if all(s.stop > s.start for s in src):
                result[tuple(dst)] = array[tuple(src)]
            lost = int(np.count_nonzero(array)) - int(np.count_nonzero(result))
            if lost and warnings is not None:
                warnings.append(f"segmentation {name!r}: {lost} voxels lie outside the reference volume "
                                "and were dropped")
            return result
        layered = LayeredSegmentation(geometry, [array], [])
        resampled, changed = layered.resampled_to(target)
        if warnings is not None and (changed or not target.is_reindexing_of(geometry)):
            warnings.append(f"segmentation {name!r} was resampled onto the reference grid; {changed} voxels changed "
                            f"(of {int(np.count_nonzero(array))} segmented, counted on the segmentation's own grid)")
        return resampled.layers[0]

    def segmentationNodeFromLayered(self, layered: LayeredSegmentation, name: str = "Segmentation",
                                    referenceVolumeNode=None):
        """A segmentation node sharing one labelmap per layer between its segments (no per-segment copies)."""
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        segmentation = node.GetSegmentation()
        binaryName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
        images = [orientedImageFromArray(layer, layered.geometry) for layer in layered.layers]
        wasModifying = node.StartModify()
        try:
            for segmentInfo in layered.segments:
                segment = slicer.vtkSegment()
                segment.SetName(segmentInfo.name)
                segment.SetColor(*segmentInfo.color)
                segment.SetLabelValue(int(segmentInfo.label_value))
                if segmentInfo.terminology is not None:
                    segment.SetTerminology(segmentInfo.terminology.to_slicer())
                if segmentInfo.algorithm_type and segmentInfo.algorithm_type != "MANUAL":
                    segment.SetTag(ALGORITHM_TYPE_TAG, segmentInfo.algorithm_type)
                if segmentInfo.algorithm_name:
                    segment.SetTag(ALGORITHM_NAME_TAG, segmentInfo.algorithm_name)
                segment.AddRepresentation(binaryName, images[segmentInfo.layer])
                segmentation.AddSegment(segment, segmentInfo.segment_id or "")
        finally:
            node.EndModify(wasModifying)
        if referenceVolumeNode is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        else:
            geometryText = slicer.vtkSegmentationConverter.SerializeImageGeometry(images[0]) if images else ""
            if geometryText:
                segmentation.SetConversionParameter(
                    slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometryText)
        return node

    # ---------------------------------------------------------------- reference series
    def referenceSeriesForVolume(self, volumeNode, dicomFolder=None) -> dicom_series.ImageSeries | None:
        """The DICOM instances a volume was loaded from: node attribute DICOM.instanceUIDs, found in the app's
        DICOM database or (headless) in ``dicomFolder``. None when the volume did not come from DICOM."""
        uids = (volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split() if volumeNode is not None else []
        if dicomFolder is not None:
            series = dicom_series.read_image_series(dicomFolder)
            if uids and not set(uids) & set(series.sop_instance_uids):
                raise ReferenceNotDicomError(
                    f"volume {volumeNode.GetName()!r} was loaded from other DICOM instances than those in the folder",
                    dicomFolder)
            return series
        if not uids:
            return None
        database = getattr(slicer, "dicomDatabase", None)
        if database is None:
            raise ReferenceNotDicomError(
                f"volume {volumeNode.GetName()!r} came from DICOM but no DICOM database is open; pass the DICOM folder")
        files = [database.fileForInstance(uid) for uid in uids]
        missing = [uid for uid, f in zip(uids, files) if not f]
        if missing:
            raise ReferenceNotDicomError(f"{len(missing)} instances of volume {volumeNode.GetName()!r} are not in the "
                                         f"DICOM database (first: {missing[0]})")
        return dicom_series.read_image_series(files)

    def exportReferenceSeries(self, volumeNode, outputDir, modality: ReferenceModality = ReferenceModality.CT,
                              info: PatientStudyInfo | None = None, progress: ProgressCallback | None = None):
        """Write a volume that was not loaded from DICOM as a new DICOM series (new UIDs, exact geometry)."""
        series = write_reference_series(self.arrayFromVolumeNode(volumeNode), self.geometryFromVolumeNode(volumeNode),
                                        outputDir, modality, info, progress)
        volumeNode.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(series.sop_instance_uids))
        return series

    # ---------------------------------------------------------------- DICOM SEG
    @with_paused_gc
    def exportDicomSeg(
        self,
        segmentationNode,
        referenceVolumeNode=None,
        outputDir=".",
        options: SegExportOptions | None = None,
        exportReference: bool = False,
        referenceDicomFolder=None,
        referenceModality: ReferenceModality = ReferenceModality.CT,
        patientInfo: PatientStudyInfo | None = None,
        fileName: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> SegExportResult:
        """Export a segmentation as DICOM SEG referencing the reference volume's DICOM series.

        If the reference volume was not loaded from DICOM, ``exportReference=True`` writes it as a new series
        first (into ``outputDir/reference``); otherwise this raises ReferenceNotDicomError. Nothing is left in
        ``outputDir`` when anything fails.
        """
        progress = progress or no_progress
        options = options or SegExportOptions()
        start = time.perf_counter()
        with OutputTransaction(outputDir) as outputs:
            t = time.perf_counter()
            series = self.referenceSeriesForVolume(referenceVolumeNode, referenceDicomFolder)
            referenceTime = time.perf_counter() - t
            referencePaths: list[str] = []
            unreferenceable = dicom_series.first_missing_reference_uid(series) if series is not None else None
            if series is None or unreferenceable:
                if series is None and referenceVolumeNode is None:
                    raise ReferenceNotDicomError("no reference: give a reference volume or a DICOM folder")
                if not exportReference:
                    if unreferenceable:
                        raise MissingTagError(
                            "the reference series cannot be referenced (UID blanked, e.g. by anonymisation); export "
                            "it as a new DICOM series (--export-reference / exportReference=True)", *unreferenceable)
                    raise ReferenceNotDicomError(
                        f"reference volume {referenceVolumeNode.GetName()!r} was not loaded from DICOM, and a SEG must "
                        "reference DICOM images; export it as a DICOM series too (--export-reference / "
                        "exportReference=True) or give the DICOM folder it came from")
                progress(0.05, "writing reference series")
                if series is not None:
                    volume, geometry = series.pixel_array(), series.geometry
                else:
                    volume = self.arrayFromVolumeNode(referenceVolumeNode)
                    geometry = self.geometryFromVolumeNode(referenceVolumeNode)
                series = write_reference_series(volume, geometry, outputs.path("reference"), referenceModality,
                                                patientInfo, lambda f, m: progress(0.05 + 0.25 * f, m))
                referencePaths = [p.name for p in series.paths]
            if options.expected_frame_of_reference_uid is None:
                options.expected_frame_of_reference_uid = segmentationNode.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
            if not referencePaths:  # a newly written series takes the segmentation's place: nothing to compare
                self.checkFrameOfReference(segmentationNode, series.frame_of_reference_uid, series.paths[0],
                                           options.expected_frame_of_reference_uid)
            progress(0.3, "reading segments")
            warnings = list(series.warnings)
            t = time.perf_counter()
            layered = self.layeredSegmentationFromNode(segmentationNode, series.geometry, warnings, copy=False)
            readTime = time.perf_counter() - t
            name = fileName or f"{safe_file_name(segmentationNode.GetName())}.seg.dcm"
            result = write_seg(layered, series, outputs.path(name), options,
                               lambda f, m: progress(0.35 + 0.6 * f, m))
            published = outputs.publish()
            result.seg_path = str(published[name])
            if referencePaths:
                result.reference_paths = [str(published["reference"] / n) for n in referencePaths]
            result.warnings = warnings + result.warnings
            result.timings["read_segmentation_node"] = readTime
            result.timings["read_reference_headers"] = referenceTime
            result.timings["total"] = time.perf_counter() - start
            progress(1.0, "done")
            return result

    # ---------------------------------------------------------------- multi-model review
    def compareSegmentations(self, segmentationNodes, referenceVolumeNode=None, referenceDicomFolder=None,
                             names: list[str] | None = None, options=None, outputDir=None,
                             exportConsensus: bool = False, progress: ProgressCallback | None = None):
        """Agreement, per structure, between several models' segmentations of one image (SegmentationQALib.compare).

        Every segmentation is put on the reference grid first, as an export would (``warnings`` of the result say
        what changed). With ``outputDir`` (new or empty) the review is written there: metrics.csv, comparison.json,
        report.html with the heat map and the slices of largest disagreement; ``exportConsensus`` adds the consensus
        as consensus.seg.dcm (the reference must be DICOM). Returns (ComparisonResult, ReportFiles or None, warnings).
        """
        from SegmentationQALib.compare import compare_segmentations, write_comparison_report
        from SegmentationQALib.compare.report import write_consensus_seg

        progress = progress or no_progress
        series = None
        if referenceDicomFolder is not None:
            series = dicom_series.read_image_series(referenceDicomFolder)
            geometry, image = series.geometry, series.pixel_array()
        elif referenceVolumeNode is not None:
            geometry = self.geometryFromVolumeNode(referenceVolumeNode)
            image = self.arrayFromVolumeNode(referenceVolumeNode)
            series = self.referenceSeriesForVolume(referenceVolumeNode) if exportConsensus else None
        else:
            raise ReferenceNotDicomError("no reference: give a reference volume or a DICOM folder")
        if exportConsensus and series is None:  # before any work or output
            raise ReferenceNotDicomError("the consensus SEG must reference DICOM images: give the CT as a DICOM "
                                         "folder (or a volume loaded from DICOM)", outputDir)
        names = list(names or [node.GetName() for node in segmentationNodes])
        if len(set(names)) != len(names):
            raise DicomFidelityError(f"model names must differ: {names}")
        warnings: list[str] = []
        models = [(name, self.layeredSegmentationFromNode(node, geometry, warnings))
                  for name, node in zip(names, segmentationNodes)]
        result = compare_segmentations(models, options, lambda f, m: progress(0.8 * f, m))
        report = None
        if outputDir is not None:
            progress(0.85, "writing the review")
            report = write_comparison_report(result, outputDir, image)
            if exportConsensus:
                write_consensus_seg(result, series, Path(outputDir) / "consensus.seg.dcm")
        progress(1.0, "done")
        return result, report, warnings

    @staticmethod
    def checkFrameOfReference(segmentationNode, referenceFrameOfReferenceUid: str | None, referencePath,
                              expected: str | None = None) -> None:
        """Refuse, before any resampling, a segmentation whose frame of reference is not the reference's: it would
        land anywhere. The error names the segmentation's file when it was loaded from one."""
        expected = expected or segmentationNode.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
        if not expected or not referenceFrameOfReferenceUid or expected == referenceFrameOfReferenceUid:
            return
        source = segmentationNode.GetAttribute(SOURCE_FILE_ATTRIBUTE)
        raise FrameOfReferenceMismatchError(
            f"segmentation {segmentationNode.GetName()!r} is in frame of reference {expected}, the reference "
            f"{referencePath if source else 'series'} in {referenceFrameOfReferenceUid}; register them "
            "first", source or referencePath, "FrameOfReferenceUID")

    @with_paused_gc
    def loadDicomSeg(self, path, name: str | None = None, progress: ProgressCallback | None = None):
        """Load a DICOM SEG into a new segmentation node; returns (node, SegLoadResult)."""
        start = time.perf_counter()
        loaded = load_seg(path, progress)
        t = time.perf_counter()
        node = self.segmentationNodeFromLayered(loaded.layered, name or loaded.series_description or Path(path).stem)
        if loaded.frame_of_reference_uid:
            node.SetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE, loaded.frame_of_reference_uid)
        node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(path))
        timings = dict(loaded.timings)
        timings["create_segmentation_node"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        result = SegLoadResult(str(path), loaded.seg_type, loaded.segment_reports(), loaded.frame_of_reference_uid,
                               loaded.referenced_series_uid, None, loaded.warnings, timings)
        return node, result


def _segmentTag(segment, name: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


__all__ = ["SegmentationQAMRMLLogic", "DicomFidelityError"]
