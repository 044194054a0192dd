"""Cohort logic for the Slicer console, the panel and `Slicer --no-main-window --python-script`: index a tree,
pair, run a task on every case (the same calls as `dicomfidelity`), and bring one case's outputs into the scene.

Imports slicer and vtk only to load a case into a scene; never qt.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from CohortsLib.label_manifest import MANIFEST_FIELDS, read_label_manifest
from CohortsLib.review import write_cohort_review
from CohortsLib.tasks import TASKS, with_defaults
from DicomFidelityCommonLib.cohort import index_tree, pair_cases
from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress, scaled


@dataclass
class CohortRun:
    """What runCohort did: the index, the pairing and the run, each as its own result."""

    index: object
    pairing: object
    run: object
    review: object | None = None  # compare-seg: the cohort review

    def to_json(self) -> dict:
        return {"index": self.index.to_json(), "pairing": self.pairing.to_json(), "run": self.run.to_json(),
                "review": self.review.to_json() if self.review is not None else None}


def task_cases(db, task: str, options: dict) -> tuple[list[dict], list[str] | None]:
    """The cases ``task`` runs on, as plain data (what workers are sent), and the manifest columns they give
    (None: the runner's default). export-seg: one per row of ``options["manifest"]``; the others: the cases the
    index pairs (rtstruct-check skips those with neither RTSTRUCT nor SEG)."""
    if task == "export-seg":
        if not options.get("manifest"):
            raise DicomFidelityError("export-seg needs a label manifest (--manifest labels.csv with label_file and "
                                     "ct_series_uid or ct_folder columns)")
        return read_label_manifest(options["manifest"], db, options.get("labels")), list(MANIFEST_FIELDS)
    cases = [dict(case, rtdose_sop_uids=[d["sop_instance_uid"] for d in case["doses"]],
                  rtstruct_sop_uid=";".join(r["sop_instance_uid"] for r in case["rtstructs"]))
             for case in pair_cases(db).to_json()["cases"]]
    if task == "rtstruct-check":
        for case in cases:
            if not case["rtstructs"] and not case["segs"]:
                case["skip_reason"] = "no RTSTRUCT or SEG references this CT series"
    return cases, None


def run_task(db, task: str, output_dir, options: dict | None = None, workers: int | None = None,
             scheduler: str | None = None, retry_failed: bool = False, progress: ProgressCallback | None = None):
    """Run ``task`` on every case of the index ``db`` (what `dicomfidelity run` and runCohort do); a compare-seg
    run also writes the cohort review. Returns (CohortRunResult, CohortReview or None)."""
    from DicomFidelityCommonLib.cohort.runner import run_cohort

    if task not in TASKS:
        raise DicomFidelityError(f"unknown task {task!r} (tasks: {', '.join(sorted(TASKS))})")
    options = dict(options or {})
    cases, fields = task_cases(db, task, options)
    # what the cases already carry (the label manifest and its default description) is no task option: moving the
    # manifest must not redo finished cases
    options = with_defaults(task, {k: v for k, v in options.items()
                                   if not (task == "export-seg" and k in ("manifest", "labels"))})
    run = run_cohort(cases, TASKS[task], output_dir, db, options, workers=workers, scheduler=scheduler,
                     retry_failed=retry_failed, progress=progress, manifest_fields=fields)
    review = None
    if task == "compare-seg":
        review = write_cohort_review(output_dir, [r.case_id for r in run.records if r.status.value == "ok"])
    return run, review


class CohortsLogic:
    def __init__(self, scene=None):
        self.scene = scene

    def runCohort(self, root, outputDir, task: str = "ml-dataset", db=None, workers: int | None = None,
                  scheduler: str | None = None, retryFailed: bool = False, options: dict | None = None,
                  progress: ProgressCallback | None = None) -> CohortRun:
        """Index ``root`` (incrementally, into ``db``, by default OUT.sqlite beside ``outputDir``), pair, and run
        ``task`` on every case into ``outputDir`` (resumable: finished cases are skipped)."""
        progress = progress or no_progress
        outputDir = Path(outputDir)
        db = Path(db) if db is not None else outputDir.parent / f"{outputDir.name}.sqlite"
        index = index_tree(root, db, progress=scaled(progress, 0.0, 0.2))
        run, review = run_task(db, task, outputDir, options, workers, scheduler, retryFailed,
                               scaled(progress, 0.2, 1.0))
        return CohortRun(index, pair_cases(db), run, review)

    @staticmethod
    def manifestRows(outputDir) -> list[dict]:
        """The rows of OUT/manifest.csv (one per case)."""
        path = Path(outputDir) / "manifest.csv"
        if not path.is_file():
            raise InvalidInputFileError("no manifest: run the cohort first", path)
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def loadCase(self, outputDir, row: dict) -> list:
        """The case's CT, dose and masks as volume nodes (ml-dataset outputs), for a look at one case."""
        from DicomFidelityCommonLib.mrml import loadVolumeFile

        nodes = []
        for key in ("ct_path", "dose_path"):
            if row.get(key):
                nodes.append(loadVolumeFile(self.scene, Path(outputDir) / row[key]))
        masks = row.get("masks_dir")
        if masks:
            for path in sorted((Path(outputDir) / masks).iterdir()):
                nodes.append(loadVolumeFile(self.scene, path, "vtkMRMLLabelMapVolumeNode"))
        return nodes
