"""read_manifest / write_manifest: the two corpus layouts and the errors a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from chordkd.data.manifest import Song, read_manifest, write_manifest
from chordkd.errors import ChordkdError


def touch(path: Path) -> Path:
    """An empty stand-in file: manifests only look at names, never decode audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_paths_are_relative_to_the_csv(tmp_path):
    csv = write_csv(
        tmp_path / "corpus" / "songs.csv",
        "id,audio,labels,duration\n"
        "b,audio/b.flac,,\n"
        "a,audio/a.wav,labels/a.lab,12.5\n",
    )
    songs = read_manifest(csv)
    assert [s.id for s in songs] == ["a", "b"]  # sorted by id
    a, b = songs
    assert a.audio == tmp_path / "corpus" / "audio" / "a.wav"
    assert a.labels == tmp_path / "corpus" / "labels" / "a.lab"
    assert a.duration == 12.5
    assert b.labels is None and b.duration is None


def test_extra_columns_are_kept(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,audio,split,artist\ns1,s1.wav,train,Someone\n")
    (song,) = read_manifest(csv)
    assert song.extra == {"split": "train", "artist": "Someone"}


def test_folder_with_manifest_csv_reads_the_csv(tmp_path):
    write_csv(tmp_path / "manifest.csv", "id,audio\nlisted,elsewhere/listed.wav\n")
    touch(tmp_path / "not_listed.wav")  # the manifest wins over a folder scan
    songs = read_manifest(tmp_path)
    assert [(s.id, s.audio) for s in songs] == [("listed", tmp_path / "elsewhere" / "listed.wav")]


def test_folder_scan_finds_labels_beside_the_audio(tmp_path):
    touch(tmp_path / "one.wav")
    touch(tmp_path / "one.lab")
    touch(tmp_path / "two.mp3")
    touch(tmp_path / "two.jams")
    touch(tmp_path / "three.flac")
    touch(tmp_path / "readme.txt")
    songs = {s.id: s for s in read_manifest(tmp_path)}
    assert set(songs) == {"one", "two", "three"}
    assert songs["one"].labels == tmp_path / "one.lab"
    assert songs["two"].labels == tmp_path / "two.jams"
    assert songs["three"].labels is None


def test_folder_scan_finds_labels_in_a_labels_folder(tmp_path):
    touch(tmp_path / "audio" / "x.ogg")
    touch(tmp_path / "labels" / "x.lab")
    touch(tmp_path / "y.wav")
    touch(tmp_path / "labels" / "y.lab")
    songs = {s.id: s for s in read_manifest(tmp_path, require_labels=True)}
    assert songs["x"].audio == tmp_path / "audio" / "x.ogg"
    assert songs["x"].labels == tmp_path / "labels" / "x.lab"
    assert songs["y"].labels == tmp_path / "labels" / "y.lab"


def test_folder_scan_finds_labels_beside_audio_in_the_audio_folder(tmp_path):
    touch(tmp_path / "audio" / "z.wav")
    touch(tmp_path / "audio" / "z.lab")
    (song,) = read_manifest(tmp_path)
    assert song.labels == tmp_path / "audio" / "z.lab"


def test_require_labels_names_a_song_without_labels(tmp_path):
    touch(tmp_path / "has.wav")
    touch(tmp_path / "has.lab")
    touch(tmp_path / "lacks.wav")
    with pytest.raises(ChordkdError, match="1 songs have no labels.*lacks"):
        read_manifest(tmp_path, require_labels=True)


def test_duplicate_id_names_both_lines(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,audio\na,a.wav\nb,b.wav\na,other.wav\n")
    with pytest.raises(ChordkdError, match=r"m\.csv:4: duplicate song id 'a' \(first on line 2\)"):
        read_manifest(csv)


def test_two_audio_files_for_one_id_in_a_folder_is_an_error(tmp_path):
    touch(tmp_path / "same.wav")
    touch(tmp_path / "audio" / "same.flac")
    with pytest.raises(ChordkdError, match="same.flac.*second audio file"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("missing", ["id", "audio"])
def test_missing_column_names_the_file(tmp_path, missing):
    header = ",".join(c for c in ("id", "audio", "labels") if c != missing)
    csv = write_csv(tmp_path / "cols.csv", f"{header}\nv1,v2\n")
    with pytest.raises(ChordkdError, match=rf"cols\.csv: manifest has no '{missing}' column"):
        read_manifest(csv)


def test_empty_id_names_the_line(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,audio\na,a.wav\n ,b.wav\n")
    with pytest.raises(ChordkdError, match=r"m\.csv:3: empty song id"):
        read_manifest(csv)


@pytest.mark.parametrize("row", ["b,", "b"])
def test_empty_audio_path_names_the_line(tmp_path, row):
    csv = write_csv(tmp_path / "m.csv", f"id,audio\na,a.wav\n{row}\n")
    with pytest.raises(ChordkdError, match=r"m\.csv:3: empty audio path"):
        read_manifest(csv)


def test_bad_duration_names_the_line(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,audio,duration\na,a.wav,3:20\n")
    with pytest.raises(ChordkdError, match=r"m\.csv:2: duration '3:20' is not a number"):
        read_manifest(csv)


def test_missing_source_and_empty_corpus_are_errors(tmp_path):
    with pytest.raises(ChordkdError, match="no such manifest or folder"):
        read_manifest(tmp_path / "absent")
    with pytest.raises(ChordkdError, match="lists no songs"):
        read_manifest(write_csv(tmp_path / "m.csv", "id,audio\n"))


def test_write_then_read_round_trips(tmp_path):
    root = tmp_path / "corpus"
    rows = [
        {"id": "s2", "audio": root / "audio" / "s2.flac", "labels": None, "duration": 61.0},
        {
            "id": "s1",
            "audio": root / "audio" / "s1.wav",
            "labels": root / "labels" / "s1.lab",
            "duration": 30.25,
            "split": "test",
        },
    ]
    write_manifest(root / "manifest.csv", rows)
    text = (root / "manifest.csv").read_text()
    assert "audio/s1.wav" in text and str(root) not in text  # stored relative to the CSV
    songs = read_manifest(root)
    assert songs == [
        Song("s1", root / "audio" / "s1.wav", root / "labels" / "s1.lab", 30.25),
        Song("s2", root / "audio" / "s2.flac", None, 61.0),
    ]
    assert songs[0].extra == {"split": "test"}
    assert songs[1].extra == {"split": ""}


def test_paths_outside_the_manifest_folder_stay_absolute(tmp_path):
    outside = tmp_path / "elsewhere" / "x.wav"
    write_manifest(tmp_path / "corpus" / "manifest.csv", [{"id": "x", "audio": outside}])
    (song,) = read_manifest(tmp_path / "corpus")
    assert song.audio == outside
