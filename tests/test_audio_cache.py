"""The decoded-audio cache: built once, rebuilt when a file changes, safe for concurrent builders."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone_corpus

from chordkd.data import audio_cache
from chordkd.data.audio_cache import build_audio_cache
from chordkd.data.manifest import read_manifest

BUILDERS = 4


def _builds(monkeypatch) -> list[str]:
    """Folders that ``build_audio_cache`` actually decoded into, in this process."""
    built: list[str] = []
    original = audio_cache._build

    def counting(songs, folder, *args, **kwargs):
        built.append(str(folder))
        return original(songs, folder, *args, **kwargs)

    monkeypatch.setattr(audio_cache, "_build", counting)
    return built


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_tone_corpus(tmp_path / "corpus", songs=3, seconds=3.0)


def test_cached_samples_are_the_decoded_audio_to_int16_precision(corpus, tmp_path):
    cache = build_audio_cache(read_manifest(corpus), tmp_path / "cache", progress=False)
    for song in read_manifest(corpus):
        y, sr = sf.read(song.audio, dtype="float32")
        assert sr == cache.sr
        got = cache.samples(song.id)
        assert got.shape == y.shape
        np.testing.assert_allclose(got, y, atol=np.abs(y).max() / 32767)


def test_an_unchanged_corpus_is_not_decoded_again(corpus, tmp_path, monkeypatch):
    build_audio_cache(read_manifest(corpus), tmp_path / "cache", progress=False)
    built = _builds(monkeypatch)
    build_audio_cache(read_manifest(corpus), tmp_path / "cache", progress=False)
    assert built == []


def test_a_changed_file_rebuilds_the_cache_with_its_new_samples(corpus, tmp_path, monkeypatch):
    build_audio_cache(read_manifest(corpus), tmp_path / "cache", progress=False)
    song = read_manifest(corpus)[1]
    y, sr = sf.read(song.audio, dtype="float32")
    sf.write(song.audio, -y, sr)  # same length, other content
    built = _builds(monkeypatch)
    cache = build_audio_cache(read_manifest(corpus), tmp_path / "cache", progress=False)
    assert built == [str(tmp_path / "cache")]
    np.testing.assert_allclose(cache.samples(song.id), -y, atol=np.abs(y).max() / 32767)


def _build_when_all_are_ready(corpus: str, folder: str, barrier, results) -> None:
    """One builder process: wait until every builder is started, then build at once."""
    built = []
    original = audio_cache._build

    def counting(*args, **kwargs):
        built.append(os.getpid())
        return original(*args, **kwargs)

    audio_cache._build = counting
    try:
        barrier.wait(timeout=120)
        cache = build_audio_cache(read_manifest(corpus), folder, progress=False)
        results.put(("ok", len(built), sorted(cache.songs)))
    except BaseException as e:  # reported to the test, whatever it is
        results.put(("error", len(built), f"{type(e).__name__}: {e}"))


@pytest.mark.slow
def test_builders_started_together_build_once_and_all_open_the_same_cache(corpus, tmp_path):
    ctx = mp.get_context("spawn")  # fresh interpreters, as separate jobs would be
    barrier, results = ctx.Barrier(BUILDERS), ctx.Queue()
    folder = tmp_path / "cache"
    procs = [ctx.Process(target=_build_when_all_are_ready,
                         args=(str(corpus), str(folder), barrier, results))
             for _ in range(BUILDERS)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [o[2] for o in outcomes if o[0] != "ok"]
    assert errors == []
    assert sum(o[1] for o in outcomes) == 1  # one process decoded, the others waited for it
    assert {tuple(o[2]) for o in outcomes} == {("tone_000", "tone_001", "tone_002")}
    assert sorted(p.name for p in folder.iterdir()) == ["build.lock", "index.json", "songs"]
    shards = [p for p in (folder / "songs").rglob("*") if p.is_file()]
    assert len(shards) == 3 and not [p for p in shards if "tmp" in p.name]  # no temporary file
