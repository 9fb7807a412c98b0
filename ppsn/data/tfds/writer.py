"""The on-disk layout of a prepared dataset, and writing it: resumable, swapped in when complete.

Layout (``{data_dir}/{name}/{config}/2.0.0/``), readable without TensorFlow by
``tfds.builder_from_directory(dir).as_data_source(split)``:

* ``{name}-{split}.array_record-{i:05d}-of-{n:05d}``: ArrayRecord shards (``group_size:1``: a
  record is read alone), records in write order (the order of the split's entries).
  ``frames`` config: **one record per frame** (``video``, ``frame``, ``label``, ``image``), the
  frames of a video consecutive; ``videos`` config: one record per video (``video_id``,
  ``label``, ``num_frames``, ``video``).
* ``metadata.json`` (TFDS's ``info.metadata``): ``ppsn_layout`` and, per split, the per-video
  index ``video_id`` / ``label`` / ``num_frames`` (a video's first frame record is the sum of
  the frame counts before it): a clip reads only its sampled frames.
* ``dataset_info.json``, ``features.json``: TFDS's, written by ``tfds.folder_dataset.write_metadata``;
  ``prepare_report.json``: videos written per split and the skipped files with reasons.

The shards are written directly (TFDS's generator writer spills splits over 1 GB through
``tf.io.gfile``, i.e. needs TensorFlow). Everything is written to the sibling
``2.0.0.incomplete``; each closed shard gets a sidecar (``*.done.json``: the entries it covers,
its index part and skips), so a killed run resumes after its last closed shard. The finished
dataset is renamed into place; an existing one is replaced only if it is a dataset ppsn
prepared (moved aside, then deleted once the new one is in place).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil

import numpy as np

from ppsn import paths
from ppsn.data.tfds.base import Entry, Skipped
from ppsn.data.tfds.encode import Encoded

LAYOUT = 2
VERSION = "2.0.0"
INCOMPLETE = ".incomplete"
STATE_FILE = "prepare_state.json"
REPORT_FILE = "prepare_report.json"
METADATA_FILE = "metadata.json"


def dataset_dir(data_dir: str, name: str, config: str) -> str:
    return paths.join(os.path.expanduser(data_dir), name, config, VERSION)


def features(config: str, class_names: list[str] | None, num_classes: int):
    import tensorflow_datasets as tfds

    label = (tfds.features.ClassLabel(names=class_names) if class_names
             else tfds.features.ClassLabel(num_classes=num_classes))
    encoded = tfds.features.Tensor(shape=(), dtype=np.object_)
    if config == "frames":
        return tfds.features.FeaturesDict({
            "video": tfds.features.Scalar(np.int32),  # position in the split's video index
            "frame": tfds.features.Scalar(np.int32),
            "label": label,
            "image": encoded})  # encoded image (JPEG)
    return tfds.features.FeaturesDict({
        "video_id": tfds.features.Text(), "label": label,
        "num_frames": tfds.features.Scalar(np.int32), "video": encoded})


def is_prepared_dataset(path: str) -> bool:
    """Whether ``path`` is a dataset this version of ppsn prepared (and may replace)."""
    try:
        meta = json.loads(paths.path(paths.join(path, METADATA_FILE)).read_text())
        return meta.get("ppsn_layout") == LAYOUT and paths.path(
            paths.join(path, "dataset_info.json")).is_file()
    except (OSError, ValueError):
        return False


def fingerprint(config: str, class_names, splits: dict[str, list[Entry]]) -> str:
    """What the prepared data depends on: a resumed run must have the same."""
    digest = hashlib.sha256(json.dumps(
        [LAYOUT, config, class_names,
         {s: [dataclasses.astuple(e) for e in entries] for s, entries in sorted(splits.items())}]
    ).encode())
    return digest.hexdigest()


def _write_json(path: str, data) -> None:
    """Written to a temporary file and renamed: a kill leaves the old file or the new one."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


class DatasetWriter:
    """Writes one dataset config into ``{final}.incomplete``, resuming what a killed run with
    the same inputs left there. ``restart_reason`` says why an earlier run's work was dropped."""

    def __init__(self, final_dir: str, name: str, config: str, class_names, num_classes: int,
                 fingerprint_: str, shard_bytes: int):
        self.final_dir, self.name, self.config = final_dir, name, config
        self.tmp = final_dir + INCOMPLETE
        self.shard_bytes = max(1, int(shard_bytes))
        self.features = features(config, class_names, num_classes)
        self.restart_reason = ""
        state_path = os.path.join(self.tmp, STATE_FILE)
        if os.path.isdir(self.tmp):
            if not os.path.isfile(state_path):
                if os.listdir(self.tmp):
                    raise FileExistsError(f"{self.tmp} exists but is not an interrupted ppsn "
                                          "prepare (no prepare_state.json); remove it first")
            else:
                state = _read_json(state_path)
                if state.get("fingerprint") != fingerprint_:
                    self.restart_reason = (f"the inputs changed since the interrupted run in "
                                           f"{self.tmp} (videos, labels or class names): "
                                           "starting over")
                    shutil.rmtree(self.tmp)
        os.makedirs(self.tmp, exist_ok=True)
        if not os.path.isfile(state_path):
            _write_json(state_path, {"layout": LAYOUT, "fingerprint": fingerprint_})

    def split(self, split: str) -> SplitWriter:
        return SplitWriter(self, split)

    def finish(self, discovery_report: list[Skipped], force: bool = False) -> dict:
        """Name the shards as TFDS does, write TFDS's metadata and the report, and rename the
        dataset into place. Returns the report (``written`` per split, ``skipped``)."""
        import tensorflow_datasets as tfds

        split_infos, index, skipped, written = [], {}, list(discovery_report), {}
        for split in sorted(_splits_in(self.tmp)):
            done = _sidecars(self.tmp, split)
            shards = [d for d in done if d["records"]]
            skipped += [Skipped(**s) for d in done for s in d["skipped"]]
            part = {k: [v for d in done for v in d["index"][k]]
                    for k in ("video_id", "label", "num_frames")}
            written[split] = len(part["video_id"])
            if not shards:
                continue
            for i, d in enumerate(shards):
                target = os.path.join(self.tmp, f"{self.name}-{split}.array_record-"
                                                f"{i:05d}-of-{len(shards):05d}")
                if not os.path.exists(target):  # else renamed by a run killed while finishing
                    os.rename(os.path.join(self.tmp, d["file"]), target)
            index[split] = part
            split_infos.append(tfds.core.SplitInfo(
                name=split, shard_lengths=[d["records"] for d in shards],
                num_bytes=sum(d["bytes"] for d in shards), filename_template=None))
        if not split_infos:
            raise ValueError(f"no video of {self.name}/{self.config} could be written "
                             f"({len(skipped)} skipped; see the reasons above)")
        tfds.folder_dataset.write_metadata(
            data_dir=self.tmp, features=self.features, split_infos=split_infos, version=VERSION,
            metadata=tfds.core.MetadataDict(ppsn_layout=LAYOUT, config=self.config, index=index),
            check_data=False, description=f"{self.name}/{self.config}, prepared by ppsn")
        report = {"written": written, "skipped": [dataclasses.asdict(s) for s in skipped]}
        _write_json(os.path.join(self.tmp, REPORT_FILE), report)
        _swap_in(self.tmp, self.final_dir, force)
        for path in glob.glob(os.path.join(self.final_dir, "*.done.json")) + [
                os.path.join(self.final_dir, STATE_FILE)]:
            os.remove(path)  # the build state, no longer needed
        return report


class SplitWriter:
    """Writes one split's videos, in entry order, into shards of about ``shard_bytes``; a shard
    is closed after the video that fills it, then its sidecar is written."""

    def __init__(self, dataset: DatasetWriter, split: str):
        self.dataset, self.split = dataset, split
        done = _sidecars(dataset.tmp, split)
        self.shards = len(done)
        self.shards_resumed = len(done)
        self.position = done[-1]["done"] if done else 0  # entries handled, written or skipped
        self.videos = sum(len(d["index"]["video_id"]) for d in done)
        self.skipped = sum(len(d["skipped"]) for d in done)
        for path in glob.glob(os.path.join(dataset.tmp, f"{split}-*.array_record")):
            if int(os.path.basename(path).split("-")[-1].split(".")[0]) >= self.shards:
                os.remove(path)  # a partial shard of a killed run
        self._writer, self._records, self._bytes = None, 0, 0
        self._index = {"video_id": [], "label": [], "num_frames": []}
        self._skipped: list[Skipped] = []

    def _shard_file(self) -> str:
        return f"{self.split}-{self.shards:05d}.array_record"

    def write(self, entry: Entry, encoded: Encoded) -> None:
        if self._writer is None:
            from array_record.python.array_record_module import ArrayRecordWriter

            self._writer = ArrayRecordWriter(os.path.join(self.dataset.tmp, self._shard_file()),
                                             "group_size:1")
        serialize = self.dataset.features.serialize_example
        if encoded.images is not None:
            records = (serialize({"video": self.videos, "frame": t, "label": entry.label,
                                  "image": image}) for t, image in enumerate(encoded.images))
        else:
            records = [serialize({"video_id": entry.video_id, "label": entry.label,
                                  "num_frames": encoded.num_frames, "video": encoded.video})]
        for record in records:
            self._writer.write(record)
            self._records += 1
            self._bytes += len(record)
        for key, value in (("video_id", entry.video_id), ("label", entry.label),
                           ("num_frames", encoded.num_frames)):
            self._index[key].append(value)
        self.videos += 1
        self.position += 1
        if self._bytes >= self.dataset.shard_bytes:
            self.close_shard()

    def skip(self, skipped: Skipped) -> None:
        self._skipped.append(skipped)
        self.skipped += 1
        self.position += 1

    def close_shard(self) -> None:
        """Close the open shard (if any) and record what it covers; after this, a killed run
        resumes from here."""
        if self._writer is None and not self._skipped:
            return
        file = None
        if self._writer is not None:
            self._writer.close()
            file = self._shard_file()
        _write_json(os.path.join(self.dataset.tmp, f"{self.split}-{self.shards:05d}.done.json"),
                    {"file": file, "records": self._records, "bytes": self._bytes,
                     "done": self.position, "index": self._index,
                     "skipped": [dataclasses.asdict(s) for s in self._skipped]})
        self.shards += 1
        self._writer, self._records, self._bytes = None, 0, 0
        self._index = {"video_id": [], "label": [], "num_frames": []}
        self._skipped = []


def _sidecars(tmp: str, split: str) -> list[dict]:
    """The closed shards of ``split``, in order (stops at the first gap)."""
    out = []
    while os.path.isfile(path := os.path.join(tmp, f"{split}-{len(out):05d}.done.json")):
        out.append(_read_json(path))
    return out


def _splits_in(tmp: str) -> set[str]:
    return {os.path.basename(p).rsplit("-", 1)[0] for p in glob.glob(os.path.join(tmp, "*.done.json"))}


def _swap_in(tmp: str, final: str, force: bool) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a ppsn dataset: checked by the
    caller) is moved aside first, put back if the second rename fails, then deleted."""
    if not os.path.exists(final):
        os.rename(tmp, final)
        return
    if not (force and is_prepared_dataset(final)):
        raise FileExistsError(f"{final} exists and is not a dataset ppsn prepared; not replacing it")
    old = final + ".old"
    if os.path.exists(old):
        shutil.rmtree(old)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)
        raise
    shutil.rmtree(old)
