"""The sharded audio cache: one file per song, and a rebuild decodes only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone_corpus

from chordkd.data import audio_cache
from chordkd.data.audio_cache import AudioCache, build_audio_cache
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_tone_corpus(tmp_path / "corpus", songs=4, seconds=2.0)


def build(corpus: Path, folder: Path) -> AudioCache:
    return build_audio_cache(read_manifest(corpus), folder, progress=False)


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """Audio files decoded by this process from now on, in order."""
    files: list[str] = []
    original = audio_cache.load_audio

    def counting(path, *args, **kwargs):
        files.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(audio_cache, "load_audio", counting)
    return files


def shards(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "songs").rglob("*") if p.is_file())


def test_each_song_lives_in_a_shard_of_its_own_sized_to_that_song(corpus, tmp_path):
    cache = build(corpus, tmp_path / "cache")
    files = shards(tmp_path / "cache")
    assert len(files) == 4
    assert sorted(f.stat().st_size for f in files) == sorted(2 * sf.info(p).frames
                                                             for p in corpus.glob("*.wav"))
    assert not (tmp_path / "cache" / "audio.pcm").exists()
    assert {cache.songs[s].file for s in cache.songs} == {
        f.relative_to(tmp_path / "cache").as_posix() for f in files}


def test_samples_are_the_decoded_audio_to_int16_precision(corpus, tmp_path):
    cache = build(corpus, tmp_path / "cache")
    y, _ = sf.read(corpus / "tone_002.wav", dtype="float32")
    np.testing.assert_allclose(cache.samples("tone_002"), y, atol=np.abs(y).max() / 32767)
    window = cache.samples("tone_002", -100, 500)  # zeros before the song's start
    assert np.all(window[:100] == 0)
    np.testing.assert_allclose(window[100:], y[:500], atol=np.abs(y).max() / 32767)


def test_changing_one_song_decodes_that_song_only(corpus, tmp_path, decoded):
    build(corpus, tmp_path / "cache")
    before = {p.name: p.stat().st_mtime_ns for p in shards(tmp_path / "cache")}
    y, sr = sf.read(corpus / "tone_001.wav", dtype="float32")
    sf.write(corpus / "tone_001.wav", -0.5 * y, sr)
    decoded.clear()
    cache = build(corpus, tmp_path / "cache")
    assert decoded == ["tone_001.wav"]
    # the .wav holds 16-bit samples: its rounding and the cache's add up to 2 steps
    np.testing.assert_allclose(cache.samples("tone_001"), -0.5 * y, atol=2 / 32767)
    after = {p.name: p.stat().st_mtime_ns for p in shards(tmp_path / "cache")}
    assert len(after) == 4 and len(set(after.items()) & set(before.items())) == 3


def test_adding_a_song_decodes_that_song_only(corpus, tmp_path, decoded):
    build(corpus, tmp_path / "cache")
    write_tone_corpus(tmp_path / "more", songs=5, seconds=2.0, seed=7)
    (tmp_path / "more" / "tone_004.wav").rename(corpus / "tone_004.wav")
    (tmp_path / "more" / "tone_004.lab").rename(corpus / "tone_004.lab")
    decoded.clear()
    cache = build(corpus, tmp_path / "cache")
    assert decoded == ["tone_004.wav"] and len(cache.songs) == 5


def test_removing_a_song_decodes_nothing_and_deletes_its_shard(corpus, tmp_path, decoded):
    first = build(corpus, tmp_path / "cache")
    gone = tmp_path / "cache" / first.songs["tone_003"].file
    (corpus / "tone_003.wav").unlink()
    (corpus / "tone_003.lab").unlink()
    decoded.clear()
    cache = build(corpus, tmp_path / "cache")
    assert decoded == [] and sorted(cache.songs) == ["tone_000", "tone_001", "tone_002"]
    assert not gone.exists() and len(shards(tmp_path / "cache")) == 3


def test_an_unreadable_song_is_not_retried_until_its_file_changes(corpus, tmp_path, decoded):
    (corpus / "broken.wav").write_bytes(b"RIFF but not a wave file")
    first = build(corpus, tmp_path / "cache")
    assert "broken.wav" in first.failed["broken"]
    decoded.clear()
    build(corpus, tmp_path / "cache")
    assert decoded == []
    (corpus / "broken.wav").write_bytes(b"RIFF still not a wave file, but changed")
    build(corpus, tmp_path / "cache")
    assert decoded == ["broken.wav"]


def test_a_truncated_shard_is_refused_naming_it_and_rebuilt_on_the_next_build(
        corpus, tmp_path, decoded):
    first = build(corpus, tmp_path / "cache")
    shard = tmp_path / "cache" / first.songs["tone_000"].file
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ChordkdError, match=shard.name):
        AudioCache(tmp_path / "cache")
    decoded.clear()
    build(corpus, tmp_path / "cache")
    assert decoded == ["tone_000.wav"]


def test_the_index_is_the_only_file_that_names_every_song(corpus, tmp_path):
    build(corpus, tmp_path / "cache")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["version"] == audio_cache.FORMAT_VERSION and len(index["songs"]) == 4
    top = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert top == ["build.lock", "index.json", "songs"]  # no temporary file left behind
