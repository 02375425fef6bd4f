"""Realistic embedded music: SoundFont songs, music21 score excerpts, held-out works, presets."""

from __future__ import annotations

import re
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf
from conftest import chord_energy_fractions

from chordkd.cli import main
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError
from chordkd.synth import gm, make_corpus
from chordkd.synth.presets import PRESETS, part_plan
from chordkd.synth.score_labels import chord_of
from chordkd.synth.scores import (
    candidate_works,
    compose_excerpt,
    corpus_root,
    load_work,
    render_excerpt,
)
from chordkd.synth.song import synthesize_song

SR = 22050
HOP = 2048
# From shared/HOLDOUT.md, written out by hand (the oracle for the holdout tests).
HELD_OUT_BWV = ["269", "347", "153.1", "86.6", "267", "281", "17.7", "40.8", "248.12-2", "38.6",
                "41.6", "65.2", "33.6", "184.5", "277", "311", "145.5", "318", "351", "302"]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and "score_cache" not in p.parts}


@pytest.fixture(scope="module")
def sf_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("sf")
    make_corpus(out, songs=3, seconds=8.0, seed=2, renderer="soundfont", workers=1,
                progress=False)
    return out


@pytest.fixture(scope="module")
def score_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("scores")
    make_corpus(out, songs=2, seconds=10.0, seed=4, source="music21", renderer="soundfont",
                workers=1, progress=False)
    return out


# ----------------------------------------------------------------------------- determinism

def test_soundfont_songs_are_byte_identical_in_any_number_of_workers(sf_corpus, tmp_path):
    make_corpus(tmp_path, songs=3, seconds=8.0, seed=2, renderer="soundfont", workers=2,
                progress=False)
    assert _files(tmp_path) == _files(sf_corpus)


def test_score_excerpts_are_byte_identical_with_a_warm_cache_and_two_workers(score_corpus,
                                                                             tmp_path):
    # score_corpus parsed afresh in one process; this run reads its cache in two.
    make_corpus(tmp_path / "warm", songs=2, seconds=10.0, seed=4, source="music21",
                renderer="soundfont", workers=2, progress=False,
                score_cache=score_corpus / "score_cache")
    assert _files(tmp_path / "warm") == _files(score_corpus)


# ----------------------------------------------------------------------------- held-out works

def _oracle_held_out(rel: str) -> bool:
    name = rel.split("/")[-1]
    stem = re.sub(r"\.(mxl|krn|xml|musicxml|rntxt|abc)$", "", name)
    return (rel.endswith(".rntxt") or "/choraleAnalyses/" in f"/{rel}"
            or rel.startswith("monteverdi/madrigal")
            or (rel.startswith("bach/") and stem in {f"bwv{n}" for n in HELD_OUT_BWV}))


def test_no_held_out_work_is_a_candidate_and_each_listed_chorale_exists():
    from music21 import corpus

    root = corpus_root()
    every = [Path(p).relative_to(root).as_posix() for p in corpus.getCorePaths()]
    held = [r for r in every if _oracle_held_out(r)]
    for n in HELD_OUT_BWV:  # the list is not vacuous: every chorale is in the corpus
        assert any(r.split("/")[-1].startswith(f"bwv{n}.") for r in held), n
    assert any(r.startswith("monteverdi/madrigal") for r in held)
    assert not set(held) & set(candidate_works())


@pytest.mark.parametrize("work", ["bach/bwv269.mxl", "bach/bwv277.krn", "bach/bwv248.12-2",
                                  "/elsewhere/BWV347.musicxml",
                                  "monteverdi/madrigal.3.1.mxl",
                                  "bach/choraleAnalyses/riemenschneider001.rntxt"])
def test_held_out_works_are_refused_by_name(work, tmp_path):
    with pytest.raises(ChordkdError, match="held out"):
        load_work(work, tmp_path)
    with pytest.raises(ChordkdError, match="held out"):
        render_excerpt(0, 0, 10.0, tmp_path, work=work)
    assert not list(tmp_path.iterdir())  # nothing was parsed or cached


# ----------------------------------------------------------------------------- labels and sound

@pytest.mark.parametrize("corpus, label_dir", [("sf_corpus", "labels"),
                                               ("score_corpus", "labels_aside")])
def test_every_lab_parses_with_mir_eval_and_covers_its_audio(corpus, label_dir, request):
    folder = request.getfixturevalue(corpus)
    labs = sorted((folder / label_dir).glob("*.lab"))
    assert labs
    for lab in labs:
        intervals, labels = mir_eval.io.load_labeled_intervals(str(lab))
        mir_eval.chord.validate(labels, labels)
        info = sf.info(str(folder / "audio" / f"{lab.stem}.flac"))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert intervals[0, 0] == 0 and abs(intervals[-1, 1] - info.frames / SR) < 1e-3
        assert np.allclose(intervals[1:, 0], intervals[:-1, 1])


def test_corpus_json_names_every_source_and_its_licence(sf_corpus, score_corpus):
    import json

    for folder, keys in ((sf_corpus, {"harmony", "soundfont"}),
                         (score_corpus, {"music21", "soundfont"})):
        sources = json.loads((folder / "corpus.json").read_text())["sources"]
        assert {s["key"] for s in sources} == keys
        assert all(s["name"] and s["licence"] for s in sources)


def test_score_labels_stay_aside_and_out_of_the_training_manifest(score_corpus):
    songs = read_manifest(score_corpus / "manifest.csv")
    assert all(s.labels is None for s in songs)
    assert {s.extra["source"] for s in songs} == {"music21"}
    assert all(s.extra["work"] and s.extra["composer"] for s in songs)


def test_soundfont_chords_hold_most_of_the_chroma_energy():
    fractions = []
    for index in range(6):
        audio, intervals, labels, meta = synthesize_song(seed=7, index=index, seconds=12.0,
                                                         renderer="soundfont")
        fractions += chord_energy_fractions(audio, intervals, labels, meta["tuning_cents"])
    assert len(fractions) >= 20
    assert (np.array(fractions) > 0.5).mean() >= 0.9


def test_chord_of_names_planted_pitch_classes_with_their_bass():
    w = np.zeros(12)
    w[[0, 4, 7]] = 1.0  # C E G
    assert chord_of(w, bass=0) == "C:maj"
    assert chord_of(w, bass=4) == "C:maj/3"
    w[10] = 1.0  # + Bb
    assert chord_of(w, bass=0) == "C:7"
    assert chord_of(np.zeros(12), bass=0) == "N"


# ----------------------------------------------------------------------------- instruments

def test_instruments_differ_across_songs_and_name_their_gm_family(sf_corpus):
    import pretty_midi

    songs = read_manifest(sf_corpus / "manifest.csv")
    assert len({s.extra["instruments"] for s in songs}) == len(songs)
    for s in songs:
        fams = dict(x.split(":") for x in s.extra["families"].split(";"))
        for role, prog in (x.split(":") for x in s.extra["instruments"].split(";")):
            if role != "drums":
                assert fams[role].lower() in pretty_midi.program_to_instrument_class(
                    int(prog)).lower()


def test_score_test_part_uses_instruments_no_other_part_uses(tmp_path):
    others = set().union(*gm.SONG_ROLES.values(), gm.SCORE_VOICES, gm.SCORE_LOW_VOICES)
    for index in range(4):
        unseen = compose_excerpt(1, index, 10.0, tmp_path, unseen_instruments=True,
                                 work="bach/bwv66.6.mxl")
        programs = {int(x.split(":")[1]) for x in unseen.meta["instruments"].split(";")}
        assert len(programs) >= 2 and not programs & others
        pooled = compose_excerpt(1, index, 10.0, tmp_path, work="bach/bwv66.6.mxl")
        assert {c.program for c in pooled.channels.values()} <= others


def test_score_test_works_and_pool_works_are_disjoint():
    test, pool = set(candidate_works("test")), set(candidate_works("pool"))
    assert test and pool and not test & pool
    assert test | pool == set(candidate_works())


# ----------------------------------------------------------------------------- presets

def test_realistic_pool_is_at_least_ten_times_the_labelled_audio_and_scales():
    preset = PRESETS["realistic"]

    def hours(plan, name):
        return sum(p.songs * (p.seconds or preset.seconds) for p in plan[name]) / 3600

    plan = part_plan(preset)
    assert hours(plan, "pool") >= 10 * hours(plan, "train")
    assert {p.source for p in plan["pool"]} == {"harmony", "music21"}
    assert all(not p.labelled for p in plan["pool"] + plan["test_scores"])
    assert hours(part_plan(preset, 5.0), "pool") == pytest.approx(5.0, rel=0.02)


# ----------------------------------------------------------------------------- errors

def test_missing_soundfont_gives_a_one_line_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "nowhere.sf2"
    code = main(["synth", "--out", str(tmp_path / "o"), "--songs", "1", "--renderer",
                 "soundfont", "--soundfont", str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(missing) in err


@pytest.mark.parametrize("content", [b"", b"not a soundfont at all",
                                     b"RIFF\x10\x00\x00\x00sfbkLIST\x00\x00"])
def test_corrupt_soundfont_gives_a_one_line_error_naming_it(tmp_path, capsys, content):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(content)
    code = main(["synth", "--out", str(tmp_path / "o"), "--songs", "1", "--renderer",
                 "soundfont", "--soundfont", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err


def test_unknown_source_gives_a_one_line_error_naming_it(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "o"), "--songs", "1", "--source", "imslp"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'imslp'" in err


def test_score_label_agreement_is_reported_and_drops_for_wrong_labels(score_corpus, tmp_path):
    import json
    import shutil

    from chordkd.annotations import read_lab, write_lab
    from chordkd.synth.harmony import PITCH_NAMES
    from chordkd.synth.score_labels import label_agreement

    report = json.loads((score_corpus / "score_labels.json").read_text())
    assert report["segments"] > 0 and 0.0 <= report["agreement"] <= 1.0
    # The same audio with every chord moved a tritone away must agree far less.
    wrong = tmp_path / "wrong"
    shutil.copytree(score_corpus, wrong, ignore=shutil.ignore_patterns("score_cache", "*.json"))
    for lab in (wrong / "labels_aside").glob("*.lab"):
        intervals, labels = read_lab(lab)
        moved = []
        for label in labels:
            if label == "N":
                moved.append(label)
                continue
            root, rest = label.split(":")
            moved.append(f"{PITCH_NAMES[(PITCH_NAMES.index(root) + 6) % 12]}:{rest}")
        write_lab(lab, intervals, moved)
    manifest = wrong / "manifest_aside.csv"
    manifest.write_text(manifest.read_text().replace(str(score_corpus), str(wrong)))
    assert label_agreement(wrong)["agreement"] < report["agreement"] - 0.3


def test_a_realistic_shaped_preset_mixes_sources_in_its_pool(tmp_path, monkeypatch):
    import json

    from chordkd.synth import corpus as corpus_module
    from chordkd.synth import make_preset
    from chordkd.synth.presets import Part, Preset

    tiny = Preset(style="demo", seconds=6.0, renderer="soundfont", parts={
        "train": Part(first_index=0, songs=1),
        "pool": (Part(first_index=100, songs=1, labelled=False, pool=True),
                 Part(first_index=0, songs=1, labelled=False, source="music21", seconds=8.0,
                      pool=True)),
        "test_scores": Part(first_index=50, songs=1, labelled=False, source="music21",
                            unseen_instruments=True),
    })
    monkeypatch.setitem(corpus_module.PRESETS, "tiny", tiny)
    make_preset("tiny", tmp_path, renderer="builtin", workers=1, progress=False)
    pool = read_manifest(tmp_path / "pool")
    assert {s.extra["source"] for s in pool} == {"harmony model", "music21"}
    assert all(s.labels is None and s.extra["renderer"] == "soundfont" for s in pool)
    assert [s.id for s in read_manifest(tmp_path / "train", require_labels=True)] == ["song_00000"]
    # The pool's score-label report covers its score excerpt only.
    assert json.loads((tmp_path / "pool" / "score_labels.json").read_text())["songs"] == 1
    summary = json.loads((tmp_path / "corpus.json").read_text())
    assert summary["renderer"] == "soundfont" and not summary["parts"]["pool"]["labelled"]
    assert (tmp_path / "score_cache").is_dir()
