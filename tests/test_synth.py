"""chordkd synth: the embedded synthetic corpus (tiny corpora of short songs)."""

from __future__ import annotations

import collections
import sys

import mir_eval
import numpy as np
import pytest
import soundfile as sf
from conftest import chord_energy_fractions

from chordkd.cli import main
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError
from chordkd.synth import QUALITIES, compose_song, make_corpus, make_preset, synthesize_song
from chordkd.synth import corpus as corpus_module
from chordkd.synth.harmony import QUALITY_INTERVALS, RARE_QUALITIES
from chordkd.synth.patterns import PARTS
from chordkd.synth.presets import PRESETS, STYLES, Part, Preset, part_plan
from chordkd.synth.soundfont import TINYSOUNDFONT_MISSING

SR = 22050
HOP = 2048


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, songs=3, seconds=8.0, seed=5, workers=1, progress=False)
    return out


# ----------------------------------------------------------------------------- determinism

def test_same_arguments_give_byte_identical_files(small_corpus, tmp_path):
    make_corpus(tmp_path, songs=3, seconds=8.0, seed=5, workers=1, progress=False)
    assert _files(tmp_path) == _files(small_corpus)
    assert len(_files(tmp_path)) == 3 + 3 + 2  # audio, labels, manifest.csv, corpus.json


def test_song_depends_only_on_seed_and_index(small_corpus):
    audio, intervals, labels, _ = synthesize_song(seed=5, index=2, seconds=8.0)
    stored = (small_corpus / "audio" / "song_00002.flac").read_bytes()
    assert corpus_module.flac_bytes(audio) == stored
    other_seed, *_ = synthesize_song(seed=6, index=2, seconds=8.0)
    assert not np.array_equal(audio, other_seed)


def test_extending_a_corpus_keeps_the_existing_songs(tmp_path):
    make_corpus(tmp_path, songs=2, seconds=6.0, seed=1, workers=1, progress=False)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "audio").iterdir()}
    make_corpus(tmp_path, songs=3, seconds=6.0, seed=1, workers=1, progress=False)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "audio").iterdir()}
    assert set(after) == set(before) | {"song_00002.flac"}
    for name in before:  # same bytes and not rewritten
        assert after[name] == before[name]
    assert [s.id for s in read_manifest(tmp_path)] == ["song_00000", "song_00001", "song_00002"]


def test_a_damaged_file_is_synthesised_again(tmp_path):
    make_corpus(tmp_path, songs=1, seconds=6.0, seed=1, workers=1, progress=False)
    flac = tmp_path / "audio" / "song_00000.flac"
    good = flac.read_bytes()
    flac.write_bytes(good[: len(good) // 2])
    make_corpus(tmp_path, songs=1, seconds=6.0, seed=1, workers=1, progress=False)
    assert flac.read_bytes() == good


def test_parallel_workers_write_the_same_files(small_corpus, tmp_path):
    make_corpus(tmp_path, songs=3, seconds=8.0, seed=5, workers=2, progress=False)
    assert _files(tmp_path) == _files(small_corpus)


# ----------------------------------------------------------------------------- files and labels

def test_audio_is_22050_hz_mono_16_bit_flac(small_corpus):
    for path in (small_corpus / "audio").iterdir():
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", SR, 1)
        assert info.frames == 8 * SR


def test_every_lab_parses_with_mir_eval_and_covers_its_audio(small_corpus):
    for song in read_manifest(small_corpus, require_labels=True):
        intervals, labels = mir_eval.io.load_labeled_intervals(str(song.labels))
        for label in labels:
            mir_eval.chord.encode(label)
        assert intervals[0, 0] == 0.0
        np.testing.assert_allclose(intervals[1:, 0], intervals[:-1, 1])  # contiguous
        n_samples = sf.info(str(song.audio)).frames
        assert abs(intervals[-1, 1] * SR - n_samples) <= HOP
        assert labels[0] == "N" and labels[-1] == "N"
        assert song.duration == pytest.approx(n_samples / SR)


def test_manifest_describes_each_song(small_corpus):
    songs = read_manifest(small_corpus)
    assert [s.id for s in songs] == ["song_00000", "song_00001", "song_00002"]
    for s in songs:
        for column in ("key", "tempo", "renderer", "seed", "timbre", "tuning_cents", "generator"):
            assert s.extra[column] != ""
        assert s.extra["renderer"] == "builtin" and s.extra["seed"] == "5"
        assert 70 <= float(s.extra["tempo"]) <= 160
        assert abs(float(s.extra["tuning_cents"])) <= 30


def test_synthesized_audio_is_float32_below_full_scale():
    audio, intervals, labels, meta = synthesize_song(seed=0, index=4, seconds=7.0)
    assert audio.dtype == np.float32 and audio.shape == (7 * SR,)
    assert 0.3 < np.abs(audio).max() < 1.0
    assert intervals[-1, 1] == pytest.approx(7.0)


# ----------------------------------------------------------------------------- harmony

def test_twenty_songs_hold_all_qualities_inversions_and_no_chord():
    qualities, inversions = set(), 0
    for index in range(20):
        labels = compose_song(seed=0, index=index, seconds=10.0).labels
        assert labels[0] == "N" and labels[-1] == "N"
        for label in labels[1:-1]:
            root, quality, _, bass = mir_eval.chord.split(label)
            qualities.add(quality)
            inversions += bass != "1"
    assert qualities == set(QUALITIES)
    assert inversions > 0


def test_every_song_holds_its_rare_chord():
    for index in range(len(RARE_QUALITIES) * 2):
        score = compose_song(seed=3, index=index, seconds=6.0)
        assert RARE_QUALITIES[index % len(RARE_QUALITIES)] in {c.quality for c in score.chords}


def test_quality_distribution_is_long_tailed():
    time = collections.Counter()
    for index in range(60):
        for chord in compose_song(seed=2, index=index, seconds=40.0).chords:
            time[chord.quality] += chord.beats
    total = sum(time.values())
    share = {q: time[q] / total for q in QUALITIES}
    assert 0.65 <= share["maj"] + share["min"] <= 0.85
    sevenths = min(share["7"], share["min7"], share["maj7"])
    assert all(share[q] < sevenths for q in RARE_QUALITIES)
    assert all(0 < share[q] < 0.03 for q in RARE_QUALITIES)


def test_chords_change_on_the_beat_grid():
    score = compose_song(seed=0, index=7, seconds=30.0)
    beat = 60.0 / score.meta["tempo"]
    starts = score.intervals[1:-1, 0] - score.intervals[1, 0]
    np.testing.assert_allclose(starts / beat, np.round(starts / beat), atol=1e-3)
    assert all(c.beats >= 1 for c in score.chords)


def test_accompaniment_sounds_only_the_labelled_chord_and_the_melody_does_not():
    non_chord_melody = 0
    for index in range(6):
        score = compose_song(seed=4, index=index, seconds=20.0)
        n = score.notes
        for chord, (start, end) in zip(score.chords, score.intervals[1:-1]):
            during = (n["onset"] >= start - 0.03) & (n["onset"] < end - 0.03)
            pcs = set(chord.pitch_classes)
            accompaniment = during & (n["part"] == PARTS.index("chords"))
            assert {int(p) % 12 for p in n["pitch"][accompaniment]} <= pcs
            downbeat_bass = (n["part"] == PARTS.index("bass")) & (np.abs(n["onset"] - start) < 1e-6)
            assert {int(p) % 12 for p in n["pitch"][downbeat_bass]} <= {chord.bass}
            melody = during & (n["part"] == PARTS.index("melody"))
            non_chord_melody += sum(int(p) % 12 not in pcs for p in n["pitch"][melody])
    assert non_chord_melody > 0


# ----------------------------------------------------------------------------- sound vs labels

@pytest.mark.parametrize("style", ["demo", "shifted"])
def test_labelled_chord_holds_most_of_the_chroma_energy(style):
    fractions = []
    for index in range(8):
        audio, intervals, labels, meta = synthesize_song(seed=11, index=index, seconds=12.0,
                                                         style=style)
        fractions += chord_energy_fractions(audio, intervals, labels, meta["tuning_cents"])
    fractions = np.array(fractions)
    assert len(fractions) >= 30
    assert (fractions > 0.5).mean() >= 0.9


def test_n_regions_are_quiet_or_drums_only():
    score = compose_song(seed=0, index=1, seconds=12.0)
    intro_end = score.intervals[0, 1]
    outro_start = score.intervals[-1, 0]
    pitched = score.notes["onset"]
    assert pitched.min() >= intro_end - 0.02
    starts_in_outro = pitched >= outro_start
    assert not starts_in_outro.any()


# ----------------------------------------------------------------------------- presets

def test_preset_parts_take_disjoint_song_indices():
    for preset in PRESETS.values():
        for pool_hours in ([None, 10.0] if preset.renderer else [None]):
            parts = [p for ps in part_plan(preset, pool_hours).values() for p in ps]
            for source in {p.source for p in parts}:  # ids are per source (song_, score_)
                ranges = sorted((p.first_index, p.first_index + p.songs)
                                for p in parts if p.source == source)
                assert all(a_end <= b_start
                           for (_, a_end), (b_start, _) in zip(ranges, ranges[1:]))
    demo = PRESETS["demo"].parts
    assert set(demo) == {"teacher", "pool", "train", "valid", "test"}
    assert not demo["pool"].labelled and demo["pool"].songs > 4 * demo["train"].songs


def test_a_hundred_hour_pool_reuses_no_valid_or_test_song():
    plan = part_plan(PRESETS["realistic"], pool_hours=100.0)
    hours = sum(p.songs * (p.seconds or PRESETS["realistic"].seconds) for p in plan["pool"]) / 3600
    assert hours == pytest.approx(100.0, rel=0.02)  # what was asked for; overlaps would raise


def test_a_pool_too_large_for_the_index_ranges_is_refused_naming_the_folders():
    with pytest.raises(ChordkdError, match="'pool'.*overlap.*'test_scores'"):
        part_plan(PRESETS["realistic"], pool_hours=400.0)


def test_shifted_style_shares_no_timbre_pattern_or_tempo_with_demo():
    demo, shifted = STYLES["demo"], STYLES["shifted"]
    demo_timbres = set(demo.chord_timbres) | set(demo.bass_timbres) | set(demo.melody_timbres)
    shifted_timbres = set(shifted.chord_timbres) | set(shifted.bass_timbres) | set(shifted.melody_timbres)
    assert not demo_timbres & shifted_timbres
    assert not set(demo.accompaniment) & set(shifted.accompaniment)
    assert not set(demo.bass_patterns) & set(shifted.bass_patterns)
    assert not set(demo.drum_patterns) & set(shifted.drum_patterns)
    (lo, hi), = demo.tempo_ranges
    assert all(b <= lo or a >= hi for a, b in shifted.tempo_ranges)


def test_preset_pool_is_unlabelled_with_labels_aside(tmp_path, monkeypatch):
    tiny = Preset(style="demo", seconds=6.0, parts={
        "teacher": Part(first_index=0, songs=2),
        "pool": Part(first_index=100, songs=2, labelled=False),
        "test": Part(first_index=200, songs=1),
    })
    monkeypatch.setitem(corpus_module.PRESETS, "tiny", tiny)
    make_preset("tiny", tmp_path, workers=1, progress=False)
    pool = read_manifest(tmp_path / "pool")
    assert all(s.labels is None for s in pool)
    assert not {"key", "qualities", "rare_quality", "labels_sha1"} & set(pool[0].extra)
    aside = read_manifest(tmp_path / "pool" / "manifest_aside.csv", require_labels=True)
    assert all(s.labels.parent.name == "labels_aside" and s.labels.is_file() for s in aside)
    assert not (tmp_path / "pool" / "labels").exists() or not any((tmp_path / "pool" / "labels").iterdir())
    ids = [s.id for part in ("teacher", "pool", "test") for s in read_manifest(tmp_path / part)]
    assert len(ids) == len(set(ids)) == 5


def test_preset_parts_makes_only_the_parts_named(tmp_path, monkeypatch):
    """A scaling study renders pools of several sizes beside one labelled set: --parts pool."""
    tiny = Preset(style="demo", seconds=6.0, parts={
        "train": Part(first_index=0, songs=1),
        "pool": Part(first_index=100, songs=2, labelled=False),
    })
    monkeypatch.setitem(corpus_module.PRESETS, "tiny", tiny)
    make_preset("tiny", tmp_path / "only", workers=1, progress=False, parts=["pool"])
    make_preset("tiny", tmp_path / "all", workers=1, progress=False)
    assert not (tmp_path / "only" / "train").exists()
    only, whole = read_manifest(tmp_path / "only" / "pool"), read_manifest(tmp_path / "all" / "pool")
    assert [s.id for s in only] == [s.id for s in whole]
    assert all(a.audio.read_bytes() == b.audio.read_bytes() for a, b in zip(only, whole))
    with pytest.raises(ValueError, match="has no part valid"):
        make_preset("tiny", tmp_path / "bad", workers=1, progress=False, parts=["valid"])


# ----------------------------------------------------------------------------- command line

def test_cli_writes_a_corpus(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path), "--songs", "2", "--seconds", "6",
                 "--workers", "1", "--no-progress"])
    assert code == 0
    assert len(read_manifest(tmp_path, require_labels=True)) == 2


@pytest.mark.parametrize(
    "args, words",
    [
        (["--songs", "0"], "--songs must be at least 1"),
        (["--songs", "-3"], "--songs must be at least 1"),
        (["--songs", "2", "--seconds", "0"], "--seconds must be at least"),
        (["--songs", "2", "--workers", "0"], "--workers must be at least 1"),
        (["--songs", "2", "--renderer", "timidity"], "unknown renderer 'timidity'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--preset", "demo", "--songs", "3"], "--preset sets the sizes"),
        (["--songs", "2", "--style", "baroque"], "unknown style 'baroque'"),
        (["--songs", "2", "--soundfont", "/nonexistent/gm.sf2"], "only used with --renderer"),
        (["--songs", "2", "--renderer", "soundfont", "--soundfont", "/nonexistent/gm.sf2"],
         "/nonexistent/gm.sf2: no such soundfont file"),
        (["--songs", "2", "--source", "imslp"], "unknown source 'imslp'"),
        (["--songs", "2", "--source", "music21", "--renderer", "builtin"],
         "renders with --renderer soundfont only"),
        (["--preset", "demo", "--pool-hours", "3"], "--pool-hours sizes the pool"),
        (["--preset", "realistic", "--pool-hours", "0"], "--pool-hours must be positive"),
        (["--preset", "demo", "--parts", "attic"], "--parts: preset demo has no part attic"),
        (["--songs", "2", "--parts", "pool"], "--parts picks parts of a --preset"),
        ([], "--songs N is required"),
    ],
)
def test_bad_arguments_give_a_one_line_error(tmp_path, capsys, args, words):
    code = main(["synth", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and words in err


def test_unwritable_output_folder_gives_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main(["synth", "--out", str(blocker / "corpus"), "--songs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot create the output folder" in err


def test_soundfont_without_tinysoundfont_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import -> ImportError
    code = main(["synth", "--out", str(tmp_path / "out"), "--songs", "1",
                 "--renderer", "soundfont"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"chordkd synth: error: {TINYSOUNDFONT_MISSING}"


def test_quality_table_matches_mir_eval():
    for quality, intervals in QUALITY_INTERVALS.items():
        bitmap = mir_eval.chord.quality_to_bitmap(quality)
        assert sorted(np.flatnonzero(bitmap).tolist()) == sorted(intervals)
