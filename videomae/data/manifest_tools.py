"""Manifest tools for data engineers: build a manifest from a folder, check one before a run, merge several.

This module gathers the public names; each job lives in its own module:

* :func:`build_manifest` (:mod:`~videomae.data.manifest_build`) scans a folder for video files (by extension) and
  frame folders (folders of images named by a template), probes each clip in a pool of killable processes
  (:mod:`~videomae.data.manifest_probe`: videos with :func:`videomae.data.decoding.probe_video`, never the
  container's header; frame folders frame by frame, :mod:`~videomae.data.frame_check`; a probe past the timeout is
  killed and its clip rejected) and writes a CSV with paths relative to the folder. Results are logged as they
  come (:mod:`~videomae.data.manifest_resume`), so a killed build resumes; ``shard="i/n"`` builds one shard
  (:mod:`~videomae.data.manifest_shards`) and :func:`join_shards` joins them into the unsharded manifest.
* :func:`check_manifest` (:mod:`~videomae.data.manifest_check`) reports everything that would hurt a run, with
  the manifest line of each problem (:mod:`~videomae.data.manifest_report`): malformed rows, unknown or mixed
  labels, duplicate rows, conflicting labels, missing files, undecodable or empty clips, missing or broken
  frames, clips shorter than the span of ``num_frames`` frames ``sampling_rate`` apart, and rows that declare
  more frames than decode. It can write a cleaned copy (:mod:`~videomae.data.manifest_fix`) that corrects
  counts and drops only unusable rows.
* :func:`merge_manifests` (:mod:`~videomae.data.manifest_merge`) merges labelled manifests into one label space
  by normalised class name (as Kinetics-710 is made from Kinetics-400/600/700) and writes the label map and one
  remap per input.

The formats are described in ``data_lists/SCHEMA.md``.
"""

from __future__ import annotations

from videomae.data.labels import normalize_class_name
from videomae.data.manifest_build import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    BuildResult,
    ScannedClip,
    build_manifest,
    scan_folder,
)
from videomae.data.manifest_check import check_manifest
from videomae.data.manifest_merge import MergeResult, merge_manifests
from videomae.data.manifest_probe import DEFAULT_FRAME_TEMPLATE
from videomae.data.manifest_report import PROBLEM_KINDS, CheckReport, Problem
from videomae.data.manifest_shards import join_shards

__all__ = [
    "DEFAULT_FRAME_TEMPLATE",
    "IMAGE_EXTENSIONS",
    "PROBLEM_KINDS",
    "VIDEO_EXTENSIONS",
    "BuildResult",
    "CheckReport",
    "MergeResult",
    "Problem",
    "ScannedClip",
    "build_manifest",
    "check_manifest",
    "join_shards",
    "merge_manifests",
    "normalize_class_name",
    "scan_folder",
]
