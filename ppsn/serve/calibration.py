"""Calibration clips for int8 quantization: clips made exactly as ``ppsn.predict`` makes them
(:func:`ppsn.serve.predictor.load_clip`) from a PaddleVideo list of the user's videos, each
fed to the quantizer ``views_per_sample`` views at a time (default 10: one sample of ten views
instead of a clip of 250). The statistics NNCF attaches to every layer keep that sample's
activations alive at once, so memory grows with the views run together: ``export --int8`` of
an R50 at 224 peaked at 3.0 GB RSS with whole clips of 30 views and was killed at 16 GB with 250,
and peaks at 1.7 GB in samples of ten (250 views). Every view of every clip is still seen.

The list's records are taken in a seeded random order (a list sorted by class still gives clips
of many classes); a record that cannot be decoded is skipped and the next one taken. A list
that cannot give ``size`` clips is a :class:`CalibrationError` (one line, exit status 2), raised
before anything is decoded when it has too few entries, or when the entries run out.
"""

from __future__ import annotations

import numpy as np

from ppsn import cli

DEFAULT_SIZE = 300  # clips (one per video, predict's TenCrop input), NNCF's default subset size
VIEWS_PER_SAMPLE = 10  # views fed to the quantizer at once (memory grows with it)
SEED = 0


class CalibrationError(cli.UserError):
    """The calibration list is missing, unreadable or cannot give enough clips."""


def read_records(list_file: str, fmt: str | None, data_prefix: str, num_classes: int,
                 flag: str = "--calibration_list") -> list:
    """The records of ``list_file`` (``fmt`` 'frames' / 'videos', or None: told by its lines);
    errors name it as ``flag``."""
    from ppsn import paths
    from ppsn.data import lists

    if not paths.path(list_file).exists():
        raise CalibrationError(f"{flag}={list_file}: no such list file")
    try:
        fmt = fmt or lists.list_format(list_file)
        return lists.ListFileSource(list_file, fmt, data_prefix, num_classes).records
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{flag}={list_file}: {e}") from None


class CalibrationClips:
    """The calibration samples of ``size`` clips: an iterable of uint8 ``[1, v, size, size, 3]``
    (a batch of one clip's next ``v <= views_per_sample`` views, in the clip's order), with
    ``len`` the number of samples."""

    def __init__(self, meta: dict, records: list, size: int, list_file: str,
                 views_per_sample: int = VIEWS_PER_SAMPLE):
        if size < 1:
            raise CalibrationError(f"--calibration_size must be >= 1, got {size}")
        if views_per_sample < 1:
            raise CalibrationError(f"views_per_sample must be >= 1, got {views_per_sample}")
        if len(records) < size:
            raise CalibrationError(
                f"--calibration_list={list_file} has {len(records)} usable entries, fewer than "
                f"the {size} clips --calibration_size asks for (one clip per video)")
        self.meta, self.records, self.size, self.list_file = meta, records, size, list_file
        self.views_per_sample = views_per_sample
        self.unreadable: list[str] = []

    def __len__(self):
        return self.size * -(-self.meta["views"] // self.views_per_sample)

    def __iter__(self):
        from ppsn.data.decode import DecodeError
        from ppsn.serve.predictor import load_clip

        made = 0
        self.unreadable = []
        for i in np.random.default_rng(SEED).permutation(len(self.records)):
            try:
                clip = load_clip(self.meta, self.records[i])
            except DecodeError as e:
                self.unreadable.append(str(e))
                continue
            for start in range(0, len(clip), self.views_per_sample):
                yield clip[None, start:start + self.views_per_sample]
            made += 1
            if made == self.size:
                return
        raise CalibrationError(
            f"--calibration_list={self.list_file} gives only {made} clips of the {self.size} "
            f"asked for ({len(self.unreadable)} entries unreadable, e.g. {self.unreadable[0]})")

    def record(self) -> dict:
        """What the model was calibrated on, for ``inference.json``."""
        from ppsn import paths

        digest = None
        try:
            import hashlib

            digest = hashlib.sha256(paths.path(self.list_file).read_bytes()).hexdigest()
        except OSError:
            pass
        return {"list": str(self.list_file), "list_sha256": digest, "clips": self.size,
                "views_per_sample": self.views_per_sample, "unreadable_skipped": len(self.unreadable), "order": f"random, seed {SEED}"}
