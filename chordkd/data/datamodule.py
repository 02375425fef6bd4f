"""Lightning data modules: labelled audio (+ .lab) and unlabelled audio joined with a teacher.

Both share one machinery: songs decoded once into a memory-mapped ``AudioCache``, random
108-frame windows for training (``WindowDataset``), whole songs for validation and test, and
the CQT computed on the device in ``on_after_batch_transfer`` (followed by the pitch shift of
features, labels and cached teacher outputs together). Under DDP, Lightning wraps the
samplers in a ``DistributedSampler``; validation metrics are de-duplicated by song id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from chordkd.annotations import clip_to_audio, intervals_to_frames, read_annotation
from chordkd.chords import get_vocabulary
from chordkd.data.audio_cache import AudioCache, build_audio_cache
from chordkd.data.datasets import (
    CONTEXT,
    SongDataset,
    SongRecord,
    SpecAugment,
    WindowDataset,
    _unit_hash,
    apply_masks,
    confident_fraction,
    hold_out_with_teacher_references,
)
from chordkd.data.manifest import Song, read_manifest
from chordkd.errors import ChordkdError
from chordkd.features import FeatureSettings, FeatureStats, LogCQT, pitch_shift_cqt
from chordkd.training.losses import IGNORE

log = logging.getLogger(__name__)


def cache_folder(source: str | Path) -> Path:
    """Where a corpus's decoded audio is cached: ``<corpus folder>/.chordkd/audio``."""
    p = Path(source)
    return (p.parent if p.is_file() else p) / ".chordkd" / "audio"


def load_songs(
    source: str | Path,
    settings: FeatureSettings,
    vocabulary: str,
    with_labels: bool,
    strict: bool = False,
    workers: int = 0,
) -> tuple[list[SongRecord], AudioCache, dict[str, str]]:
    """Decode a corpus into its audio cache and read its labels into per-frame classes.

    Returns (usable songs, the audio cache, {song id: reason} for every skipped song). Bad
    audio and bad annotations are skipped with a warning, or raise with ``strict``.
    """
    entries: list[Song] = read_manifest(source, require_labels=with_labels and strict)
    audio = build_audio_cache(entries, cache_folder(source), sr=settings.sr, workers=workers,
                              strict=strict)
    skipped = dict(audio.failed)
    vocab = get_vocabulary(vocabulary)
    records = []
    for s in entries:
        if s.id not in audio:
            continue
        n = audio.length(s.id)
        rec = SongRecord(id=s.id, n_samples=n, n_frames=settings.n_frames(n))
        if with_labels:
            if s.labels is None:
                reason = f"{s.audio}: no label file"
                if strict:
                    raise ChordkdError(reason)
                log.warning("skipping %s", reason)
                skipped[s.id] = reason
                continue
            try:
                intervals, names = clip_to_audio(*read_annotation(s.labels), n / settings.sr,
                                                  s.labels)
                rec.labels = intervals_to_frames(
                    intervals, names, vocab, rec.n_frames, settings.hop, settings.sr
                ).astype(np.int16)
            except ChordkdError as e:
                if strict:
                    raise
                msg = str(e) if str(s.labels) in str(e) else f"{s.labels}: {e}"
                log.warning("skipping %s", msg)
                skipped[s.id] = msg
                continue
            rec.intervals, rec.label_names = intervals, list(names)
        records.append(rec)
    if skipped:
        log.warning("%s: %d bad songs skipped, %d used", source, len(skipped), len(records))
    if not records:
        raise ChordkdError(f"{source}: no usable songs")
    return records, audio, skipped


class ChordDataModule(L.LightningDataModule):
    """Training windows from ``train``; whole songs from ``valid`` (or held out of ``train``)
    and ``test``.

    Args:
        train, valid, test: corpora (manifest CSV or folder; see ``chordkd.data.manifest``).
        targets: ``"labels"`` (ground truth from .lab) or ``"teacher"`` (teacher argmax from
            the cache; the training corpus needs no labels).
        teacher_cache: folder written by ``chordkd label`` for the training songs; required
            for ``targets="teacher"`` and for distillation callbacks.
        window: frames per training window (BTC: 108).
        pitch_shift: maximum random shift in semitones for training windows (0: off).
        noise: ``data.noise`` of the config (``NoiseConfig``): SpecAugment masks applied to
            training windows after the pitch shift (``SpecAugment``), and ``min_confidence``,
            below which a frame's teacher pseudo-label becomes ``IGNORE``. None: no noise.
        teacher: the teacher checkpoint that must have written ``teacher_cache`` (its sha1 is
            compared with the cache's); None: any one teacher, as long as it is one.
        allow_cache_mismatch: use a teacher cache whose fingerprints do not match (other
            teacher, other audio, other feature settings), with a warning, instead of refusing.
        valid_targets: what validation songs are scored against: ``"labels"`` (``valid``'s
            .lab files) or ``"teacher"``: ``valid_holdout`` songs of ``train``, never trained
            on, whose reference is the cached teacher argmax turned into labelled intervals
            (stage 1 as the paper trains it: no ground-truth label is read).
        valid_holdout: how many training songs ``valid_targets="teacher"`` holds out (0: no
            validation): those whose id hashes lowest (blake2b), so the choice does not depend
            on the seed, the song order or the corpus's other songs.
        labelled: a labelled corpus trained on together with ``train`` (``targets="teacher"``):
            every batch then holds ``labelled_ratio`` of ground-truth windows from it and the
            rest pseudo-labelled windows of ``train`` (``chordkd.data.mixing``; noisy student).
        labelled_ratio: the share of each batch drawn from ``labelled``, in (0, 1).
    """

    def __init__(
        self,
        train: str,
        valid: str | None = None,
        test: str | None = None,
        targets: str = "labels",
        teacher_cache: str | None = None,
        vocabulary: str = "large",
        window: int = 108,
        batch_size: int = 32,
        num_workers: int = 0,
        pitch_shift: int = 5,
        seed: int = 0,
        strict: bool = False,
        stats_songs: int = 64,
        settings: FeatureSettings | None = None,
        noise: Mapping | None = None,
        format: str = "mmap",
        stream: str | None = None,
        stream_cache: str | None = None,
        teacher: str | None = None,
        allow_cache_mismatch: bool = False,
        valid_targets: str = "labels",
        valid_holdout: int = 0,
        labelled: str | None = None,
        labelled_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        if valid_targets not in ("labels", "teacher"):
            raise ChordkdError(f"valid_targets must be 'labels' or 'teacher', got {valid_targets!r}")
        if valid_holdout and (valid_targets != "teacher" or format != "mmap" or not teacher_cache):
            raise ChordkdError("valid_holdout: held-out songs are scored against the teacher; "
                               "it needs valid_targets='teacher', format='mmap' and teacher_cache")
        if valid_targets == "teacher" and valid:
            raise ChordkdError("valid_targets='teacher' validates on valid_holdout songs of "
                               "train, not on the labelled corpus valid")
        self.valid_targets, self.valid_holdout = valid_targets, valid_holdout
        self.expected_teacher, self.allow_cache_mismatch = teacher, allow_cache_mismatch
        self.train_source, self.valid_source, self.test_source = train, valid, test
        self.targets, self.teacher_cache_path = targets, teacher_cache
        self.vocabulary = vocabulary
        self.window, self.batch_size, self.num_workers = window, batch_size, num_workers
        self.pitch_shift, self.seed, self.strict = pitch_shift, seed, strict
        self.stats_songs = stats_songs
        self.settings = settings or FeatureSettings()
        noise = dict(noise or {})
        self.min_confidence = float(noise.pop("min_confidence", 0.0))
        if self.min_confidence > 0 and targets != "teacher":
            raise ChordkdError("noise.min_confidence filters pseudo-labels: it needs targets='teacher'")
        self.spec_augment = SpecAugment(**noise)
        self.pseudo_labels_kept: float | None = None  # fraction of frames kept (targets=teacher)
        self._kept_logged = False
        self.cqt = LogCQT(self.settings)
        self.vocab = get_vocabulary(vocabulary)
        # [25, C]: row s + 12 maps class indices for a shift of s semitones (-12..12)
        self._transpose = torch.stack(
            [torch.from_numpy(self.vocab.transpose_index_map(s)) for s in range(-12, 13)]
        )
        if format not in ("mmap", "stream") or (format == "stream") != bool(stream):
            raise ChordkdError("data.format=stream needs data.stream (and only it uses it)")
        if format == "stream" and targets != "teacher":
            raise ChordkdError("data.format=stream holds teacher pseudo-labels: targets='teacher'")
        self.format, self.stream, self.stream_cache = format, stream, stream_cache
        if labelled and (targets != "teacher" or format != "mmap"):
            raise ChordkdError("data.labelled mixes ground truth into pseudo-labelled batches: "
                               "it needs targets='teacher' and format='mmap'")
        self.labelled_source, self.labelled_ratio = labelled, labelled_ratio
        self.labelled_set: WindowDataset | None = None
        self._stream_loader = None
        self.teacher = None
        self.skipped: dict[str, dict[str, str]] = {}
        self._prepared: dict[str, tuple] = {}

    # -- data ---------------------------------------------------------------------------
    def _load(self, split: str, source: str, with_labels: bool):
        if split not in self._prepared:
            records, audio, skipped = load_songs(
                source, self.settings, self.vocabulary, with_labels, self.strict,
                workers=min(self.num_workers, 2),
            )
            self._prepared[split] = (records, audio)
            self.skipped[split] = skipped
        return self._prepared[split]

    def prepare_data(self) -> None:
        # Builds the audio caches once (rank 0); setup() on every rank then finds them built.
        if self.format == "mmap":
            self._load("train", self.train_source, self.targets == "labels")
        if self.labelled_source:
            self._load("labelled", self.labelled_source, True)
        for split, src in (("valid", self.valid_source), ("test", self.test_source)):
            if src:
                self._load(split, src, True)

    def setup(self, stage: str | None = None) -> None:
        if self.format == "stream":
            self._setup_stream()
        else:
            self._setup_train()
        self.val_set = self.test_set = None
        if self.valid_source:
            self.val_set = SongDataset(*self._load("valid", self.valid_source, True))
        elif self.valid_holdout:
            self.val_set = SongDataset(*self._prepared["valid"])
        if self.test_source:
            self.test_set = SongDataset(*self._load("test", self.test_source, True))

    def _setup_stream(self) -> None:
        if getattr(self, "train_set", None) is not None:
            return  # setup() runs before the trainer exists (fit.py) and again inside it
        from chordkd.data.streaming import StreamedWindows

        self.train_set = StreamedWindows(
            self.stream, self.settings, self.window, self.pitch_shift, self.seed,
            self.spec_augment, self.min_confidence, cache_dir=self.stream_cache,
        )

    def _setup_train(self) -> None:
        records, audio = self._load("train", self.train_source, self.targets == "labels")
        if self.teacher_cache_path:
            from chordkd.labelling.teacher_cache import TeacherCache

            self.teacher = TeacherCache(self.teacher_cache_path)
            records = self._join_teacher(records)
        elif self.targets == "teacher":
            raise ChordkdError("data.targets=teacher needs data.teacher_cache (run chordkd label)")
        if self.valid_holdout:
            records, held = hold_out_with_teacher_references(
                records, self.valid_holdout, self.teacher, self.vocab, self.settings,
                self.train_source)
            self._prepared["valid"] = (held, audio)
            self.skipped.setdefault("valid", {})
        self.train_set = WindowDataset(
            records, audio, self.settings, self.window, self.targets, self.teacher,
            self.pitch_shift, self.seed, self.spec_augment, self.min_confidence,
        )
        if self.targets == "teacher":
            self._log_pseudo_labels_kept([r.id for r in records])
        if self.labelled_source:
            self._mix_labelled()

    def _mix_labelled(self) -> None:
        """Batches of labelled windows (ground truth) and pool windows (pseudo-labels)."""
        from chordkd.data.mixing import MixedBatches

        records, audio = self._load("labelled", self.labelled_source, True)
        # its own seed: the two sources' windows of the same index draw independent shifts
        self.labelled_set = WindowDataset(
            records, audio, self.settings, self.window, "labels", None, self.pitch_shift,
            _unit_hash(self.seed, 1) % 2**31, self.spec_augment,
        )
        self.pool_set = self.train_set
        self.train_set = MixedBatches(self.labelled_set, self.pool_set, self.batch_size,
                                      self.labelled_ratio, self.seed)

    def _log_pseudo_labels_kept(self, song_ids: list[str]) -> None:
        # setup() runs before the trainer exists (fit.py) and again inside trainer.fit:
        # count once, send to the logger once it is there
        if self.pseudo_labels_kept is None:
            self.pseudo_labels_kept = confident_fraction(self.teacher, song_ids, self.min_confidence)
            if self.min_confidence > 0:
                log.info("pseudo-labels: %.1f%% of %s's frames have teacher confidence >= %g",
                         100 * self.pseudo_labels_kept, self.train_source, self.min_confidence)
        logger = self.trainer.logger if self.trainer is not None else None
        if logger and not self._kept_logged:  # logger methods run on rank zero only
            # a property of the run's data, not a time series (and a resumed run has no step 0)
            logger.log_hyperparams({"data/pseudo_labels_kept": self.pseudo_labels_kept})
            self._kept_logged = True

    def _join_teacher(self, records: list[SongRecord]) -> list[SongRecord]:
        audio = self._prepared["train"][1]
        kept = []
        for r in records:
            if r.id not in self.teacher:
                msg = f"{self.teacher_cache_path}: no teacher output for song {r.id!r}"
                if self.strict:
                    raise ChordkdError(msg)
                log.warning("skipping %s", msg)
                self.skipped.setdefault("train", {})[r.id] = msg
                continue
            frames = self.teacher.frames(r.id)
            if frames != r.n_frames:
                raise ChordkdError(
                    f"{self.teacher_cache_path}: song {r.id!r} has {frames} cached frames but "
                    f"its audio gives {r.n_frames} (cache written with other audio or settings?)"
                )
            kept.append(r)
        if self.teacher.n_classes != self.vocab.size:
            raise ChordkdError(
                f"{self.teacher_cache_path}: teacher has {self.teacher.n_classes} classes, "
                f"vocabulary {self.vocabulary!r} has {self.vocab.size}"
            )
        self._check_fingerprints(kept, audio)
        return kept

    def _check_fingerprints(self, records: list[SongRecord], audio: AudioCache) -> None:
        """Refuse a teacher cache written by another teacher, from other audio or features.

        Frame and class counts match for any teacher and any audio of the same length, so
        they cannot tell; the fingerprints the cache stores per song can.
        """
        from chordkd.teachers import teacher_identity

        cache, features = self.teacher_cache_path, self.settings.fingerprint()
        want_teacher = teacher_identity(self.expected_teacher) if self.expected_teacher else None
        first: tuple[str, str] | None = None  # (teacher sha1, song) of the first song
        for r in records:
            e = self.teacher.entry(r.id)
            first = first or (e.teacher, r.id)
            problem = None
            if want_teacher is not None and e.teacher != want_teacher:
                problem = (f"song {r.id!r} was labelled by teacher {e.teacher[:12]}, not by "
                           f"{self.expected_teacher} ({want_teacher[:12]})")
            elif e.teacher != first[0]:
                problem = (f"songs {first[1]!r} and {r.id!r} were labelled by different "
                           f"teachers ({first[0][:12]}, {e.teacher[:12]})")
            elif e.features != features and not e.features.endswith(f"/grid-{features}"):
                # a waveform teacher (madmom, a factory) records its own input pipeline and
                # the frame grid it was resampled onto: that grid must be this run's
                problem = (f"song {r.id!r} was labelled with feature settings {e.features}, "
                           f"this run computes {features}")
            elif not e.fingerprint.matches(audio.sources[r.id]):
                problem = (f"song {r.id!r} was labelled from other audio than "
                           f"{audio.sources[r.id]} (the file changed since `chordkd label`)")
            if problem is None:
                continue
            msg = f"{cache}: {problem}"
            if not self.allow_cache_mismatch:
                raise ChordkdError(f"{msg}; relabel, or set data.allow_cache_mismatch=true")
            log.warning("%s (used anyway: data.allow_cache_mismatch=true)", msg)

    def reference(self, split: str, index: int) -> SongRecord:
        return self._prepared[split][0][index]

    def feature_stats(self) -> tuple[float, float]:
        """Scalar mean and std of log-CQT frames over (up to ``stats_songs``) training songs
        (with ``format="stream"``: as many windows, spread evenly over the stream)."""
        stats = FeatureStats()
        if self.format == "stream":
            n = len(self.train_set)
            with torch.inference_mode():
                for i in np.unique(np.linspace(0, n - 1, min(self.stats_songs, n)).astype(int)):
                    item = self.train_set[int(i)]
                    # whole windows: only a song shorter than one window has padding in them
                    stats.update(self.cqt(item["audio"])[CONTEXT : CONTEXT + self.window])
            return stats.mean, stats.std
        # the training songs (held-out validation songs left out; with data.labelled, the pool's)
        records = getattr(self, "pool_set", self.train_set).songs
        audio = self._prepared["train"][1]
        rng = np.random.default_rng(self.seed)
        pick = rng.permutation(len(records))[: self.stats_songs]
        with torch.inference_mode():
            for i in sorted(pick):
                stats.update(self.cqt(torch.from_numpy(audio.samples(records[i].id))))
        return stats.mean, stats.std

    # -- loaders ------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.format == "stream":
            return self._streaming_loader()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.set_epoch(epoch)
        seed = self.seed * 100_003 + epoch
        if self.labelled_set is not None:
            # whole mixed batches as items (batch_size=None): a distributed sampler gives each
            # rank whole batches, so every rank's batches keep the labelled share
            return DataLoader(
                self.train_set, batch_size=None,
                sampler=EpochPermutation(len(self.train_set), seed),
                generator=torch.Generator().manual_seed(seed),
                num_workers=self.num_workers, persistent_workers=False,
            )
        # The loader's own generator only seeds workers (items depend on (seed, epoch, index)
        # alone); without one, each iteration would draw that seed from the global RNG and
        # shift the dropout masks that follow.
        return DataLoader(
            self.train_set, batch_size=self.batch_size,
            sampler=EpochPermutation(len(self.train_set), seed),
            generator=torch.Generator().manual_seed(seed),
            num_workers=self.num_workers, drop_last=False,
            persistent_workers=False,
        )

    def _streaming_loader(self) -> DataLoader:
        # One loader for the whole run: it numbers the epochs (the stream's shuffle seed) and
        # its state_dict, saved in checkpoints by Lightning, is the position inside an epoch.
        if self._stream_loader is None:
            from litdata import StreamingDataLoader

            self._stream_loader = StreamingDataLoader(
                self.train_set, batch_size=self.batch_size, num_workers=self.num_workers,
                drop_last=False)
        return self._stream_loader

    def _songs_loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=self.num_workers,
                          collate_fn=_collate_song)

    def val_dataloader(self):
        return self._songs_loader(self.val_set) if self.val_set is not None else []

    def test_dataloader(self):
        return self._songs_loader(self.test_set) if self.test_set is not None else []

    # -- on the device ------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        device = batch["audio"].device
        if next(self.cqt.buffers()).device != device:
            self.cqt.to(device)  # a DataModule is not an nn.Module: move the front end here
        feats = self.cqt(batch["audio"])
        if "shift" in batch:  # a training window: crop the context, pitch shift, then masks
            feats = feats[:, CONTEXT : CONTEXT + self.window]
            shift = batch["shift"]
            if bool((shift != 0).any()):
                feats = pitch_shift_cqt(feats, shift, self.settings.bins_per_semitone)
                table = self._transpose.to(device)[shift + 12]  # [B, C]
                labels = batch["labels"]
                valid = labels != IGNORE
                batch["labels"] = torch.where(
                    valid, table.gather(1, labels.clamp_min(0)), labels
                )
                if "teacher_indices" in batch:
                    idx = batch["teacher_indices"]
                    batch["teacher_indices"] = table.gather(1, idx.flatten(1)).view_as(idx)
            if "time_masks" in batch:  # after the shift, so a masked band stays where it is drawn
                feats = apply_masks(feats, batch.pop("time_masks"), batch.pop("freq_masks"),
                                    self.spec_augment.mask_value)
        batch["features"] = feats
        del batch["audio"]
        return batch


class EpochPermutation(Sampler[int]):
    """A shuffled order of ``n`` items that is a function of ``seed`` alone.

    ``shuffle=True`` with a seeded generator draws a new order on every iteration of the
    loader, and Lightning iterates a reloaded training loader twice before its first batch but
    a resumed one once: a resumed run would see the epoch's windows in another order.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        return iter(torch.randperm(self.n, generator=g).tolist())


def _collate_song(items: list[dict]) -> dict:
    (item,) = items
    return {
        "audio": item["audio"][None],
        "labels": item["labels"][None],
        "song_id": item["song_id"],
        "index": item["index"],
    }


class LabelledDataModule(ChordDataModule):
    """Audio + .lab pairs: the supervised baseline and stage 2 (optionally with a teacher cache)."""

    def __init__(self, train: str, **kwargs) -> None:
        kwargs["targets"] = "labels"
        super().__init__(train, **kwargs)


class TeacherDataModule(ChordDataModule):
    """Unlabelled audio joined with cached teacher outputs: stage 1 (pseudo-labels + KD)."""

    def __init__(self, train: str, teacher_cache: str, **kwargs) -> None:
        kwargs["targets"] = "teacher"
        super().__init__(train, teacher_cache=teacher_cache, **kwargs)
