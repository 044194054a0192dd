"""Convert a cohort with med-imagetools 2.x (run with .venv-cohort-imagetools/bin/python) and say what it paired.

Usage: imagetools_cohort.py TREE OUT_DIR RESULT.json

What an imgtools user does for an ML data set, in one process:

1. Lay the files out the way the autopipeline reads them: one folder per series, ``.dcm`` names (symbolic links
   ``sorted/<PatientID>/<Modality>_<SeriesInstanceUID>/<SOPInstanceUID>.dcm``). The autopipeline loads a series
   from the folder of its first file and an RTSTRUCT from a folder holding exactly one ``*.dcm``, and its crawler
   lists only ``*.dcm`` files; on this cohort's tree (random names, shared folders, series across folders) it loads
   almost nothing. imgtools' own ``dicomsort`` keeps the file names, so it cannot do this; the header read it takes
   is counted in imgtools' time. Files without a readable header are left out (the released crawler stops the
   whole run on the first one, "No modality found in DICOM") and reported.
2. Its autopipeline: crawl, interlace by references, load each CT with its RTSTRUCT/RTDOSE, resample them onto the
   CT (its default transform), write NIfTI; ``n_jobs=1``, driven sample by sample. Samples are imgtools' own
   "all modalities" query grouped by CT, keeping CT, RTSTRUCT and RTDOSE (what our ml-dataset task writes; SEG and
   RTPLAN nodes are dropped) for CTs that have at least one of them.

Two run-time patches, applied only in this process (nothing in site-packages changes):

* med-imagetools 2.16 records an RTDOSE's referenced RTPLAN/RTSTRUCT SOP Instance UIDs under the key
  ``ReferencedSeriesSOPUIDs`` (``RTDOSEMetadataExtractor.computed_fields``), while the crawler resolves references
  from ``ReferencedSOPUIDs`` (``resolve_reference_series``); so no dose is ever linked and the pipeline stops with
  "No valid samples found". The patch stores the same value under ``ReferencedSOPUIDs`` too.
* ``Dose.from_dicom`` reads DoseGridScaling with ``dcmread(path)``, but the autopipeline passes the series folder
  (IsADirectoryError: no RTDOSE is ever written). The patch makes that module's ``dcmread`` read the folder's file.

RESULT.json: {"tool", "version", "seconds" (work, after imports), "import_seconds", "sort_seconds",
"pairs": [{"sop", "modality", "ct_series_uids": [...], "dose_on_ct": path | null}], "ct": {series uid: nifti},
"reported": [{"file", "sop", "why"}] (files left out, failed samples, objects not written)}.
"""

import json
import os
import sys
import time
from importlib import metadata

started = time.perf_counter()
from pathlib import Path  # noqa: E402

import pydicom  # noqa: E402
from imgtools.autopipeline import Autopipeline, process_one_sample  # noqa: E402
from imgtools.coretypes.imagetypes import dose as dose_module  # noqa: E402
from imgtools.dicom.dicom_metadata import extractors  # noqa: E402
from imgtools.io.sample_output import ExistingFileMode  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started
KEPT = ("CT", "RTSTRUCT", "RTDOSE")


def patch_imgtools() -> None:
    """The two documented run-time patches (see the module docstring)."""
    dose_extractor = extractors.RTDOSEMetadataExtractor
    released = dose_extractor.__dict__["computed_fields"]  # a classproperty descriptor

    class _Fields:
        def __get__(self, instance, owner):
            fields = dict(released.__get__(instance, owner))
            fields["ReferencedSOPUIDs"] = fields["ReferencedSeriesSOPUIDs"]
            return fields

    dose_extractor.computed_fields = _Fields()
    read = dose_module.dcmread

    def read_file_of_folder(path, *args, **kwargs):
        if os.path.isdir(path):
            path = min(Path(path).glob("*.dcm"))
        return read(path, *args, **kwargs)

    dose_module.dcmread = read_file_of_folder


def sort_tree(tree: Path, target: Path) -> list[dict]:
    """Symbolic links, one folder per series, ``<SOPInstanceUID>.dcm``; the files it cannot read, reported."""
    skipped = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["PatientID", "Modality", "SeriesInstanceUID", "SOPInstanceUID"])
            folder = target / str(ds.PatientID) / f"{ds.Modality}_{ds.SeriesInstanceUID}"
            name = f"{ds.SOPInstanceUID}.dcm"
        except Exception as error:  # noqa: BLE001 - whatever it is, imgtools' crawler would stop on it
            skipped.append({"file": str(path), "sop": None, "why": f"left out, unreadable: {error}"[:300]})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / name).exists():  # a second copy of one instance: the first one found is kept
            (folder / name).symlink_to(path.resolve())
    return skipped


def main(tree: str, out: str, result_path: str) -> int:
    patch_imgtools()
    started = time.perf_counter()
    out_dir = Path(out)
    reported = sort_tree(Path(tree), out_dir / "sorted")
    sort_seconds = time.perf_counter() - started
    pipeline = Autopipeline(input_directory=out_dir / "sorted", output_directory=out_dir / "nifti",
                            crawl_directory=out_dir / "crawl", n_jobs=1,
                            existing_file_mode=ExistingFileMode.OVERWRITE)
    raw = pipeline.input.crawler.crawl_db_raw  # series -> subseries -> {"instances": {sop: file}, ...}
    sops_of = {series: [sop for sub in subs.values() for sop in sub.get("instances", {})]
               for series, subs in raw.items()}
    samples = []
    for group in pipeline.input.interlacer.query("*"):
        kept = [node for node in group if node.Modality in KEPT]
        if kept and kept[0].Modality == "CT" and len(kept) > 1:
            samples.append(kept)

    pairs, ct_files, sample_seconds = [], {}, []
    for number, sample in enumerate(sorted(samples, key=lambda s: (s[0].PatientID, s[0].SeriesInstanceUID))):
        result = process_one_sample((f"{number:04}", sample, pipeline.input, pipeline.transformer, pipeline.output))
        sample_seconds.append(result.processing_time)
        written: dict[str, list[str]] = {}  # {Modality}_{SeriesInstanceUID, its last digits}/{ImageID}.nii.gz
        for path in result.output_files:
            written.setdefault(Path(path).parent.name, []).append(str(path))

        def files_of(node, written=written):
            return next((files for key, files in written.items()
                         if key.partition("_")[0] == node.Modality
                         and node.SeriesInstanceUID.endswith(key.partition("_")[2])), None)

        ct_uid = sample[0].SeriesInstanceUID
        if files_of(sample[0]):
            ct_files[ct_uid] = files_of(sample[0])[0]
        if result.error_message:
            reported.append({"file": sample[0].folder, "sop": None, "why": result.error_message[:300]})
        for node in sample[1:]:
            files = files_of(node)
            for sop in sops_of.get(node.SeriesInstanceUID, []):
                if not files:
                    reported.append({"file": node.folder, "sop": sop, "why": f"{node.Modality} not written"})
                pairs.append({"sop": sop, "modality": node.Modality, "ct_series_uids": [ct_uid] if files else [],
                              "dose_on_ct": files[0] if files and node.Modality == "RTDOSE" else None})
    seconds = time.perf_counter() - started
    Path(result_path).write_text(json.dumps({
        "tool": "med-imagetools", "version": metadata.version("med-imagetools"), "seconds": seconds,
        "import_seconds": IMPORT_SECONDS, "sort_seconds": sort_seconds, "sample_seconds": sample_seconds,
        "pairs": pairs, "ct": ct_files, "reported": reported, "samples": len(samples)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
