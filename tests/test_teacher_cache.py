"""The teacher cache format: round trips, crash safety, superseding, reconstruction, transposition."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chordkd.chords import get_vocabulary
from chordkd.errors import CacheError
from chordkd.labelling.teacher_cache import (
    AudioFingerprint,
    CacheWriter,
    TeacherCache,
    cache_differences,
    consolidate,
    rebuild_log_probs,
    transpose_indices,
)

C = 170
FP = AudioFingerprint("0" * 40, 10, 1)


def logits_for(seed: int, frames: int = 40, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(frames, C, generator=torch.Generator().manual_seed(seed)) * scale


def write_song(w: CacheWriter, song: str, logits: torch.Tensor, k: int = 8, tail_t: float = 3.0,
               audio: AudioFingerprint = FP):
    logz = torch.logsumexp(logits, -1)
    logp = logits - logz[:, None]
    logz_t = torch.logsumexp(logits / tail_t, -1).numpy()
    if k == 0:
        return w.write_logits(song, logz.numpy(), logp.half().numpy(), None, C, audio=audio,
                              teacher="t", features="f")
    v, i = logp.topk(k, -1)
    return w.write_logits(song, logz.numpy(), v.half().numpy(), i.to(torch.uint8).numpy(), C,
                          audio=audio, teacher="t", features="f", logz_t=logz_t,
                          tail_temperature=tail_t)


def rebuilt(out, temperature: float) -> torch.Tensor:
    """Rebuild one cached song at ``temperature``: ``[T, C]`` log-probs."""
    t = [torch.from_numpy(np.array(a))[None] for a in (out.values, out.indices, out.logz)]
    logz_t = None if out.logz_t is None else torch.from_numpy(np.array(out.logz_t))[None]
    return rebuild_log_probs(*t, n_classes=C, temperature=temperature, logz_t=logz_t,
                             tail_temperature=out.tail_temperature)[0]


def kl(full_logits: torch.Tensor, rebuilt_log_probs: torch.Tensor, temperature: float) -> float:
    p = torch.log_softmax(full_logits / temperature, -1)
    return float((p.exp() * (p - rebuilt_log_probs)).sum(-1).mean())


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---- format round trip ----------------------------------------------------------------------


def test_read_returns_the_top_k_written(cache_dir):
    lg = logits_for(0)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=8)
    out = TeacherCache(cache_dir).read("a")
    logp = torch.log_softmax(lg, -1)
    v, i = logp.topk(8, -1)
    assert out.values.dtype == np.float16 and out.values.shape == (40, 8)
    assert out.indices.dtype == np.uint8 and np.array_equal(out.indices, i.numpy())
    np.testing.assert_array_equal(out.values, v.half().numpy())
    np.testing.assert_allclose(out.logz, torch.logsumexp(lg, -1).numpy(), rtol=1e-6)
    assert out.tail_temperature == 3.0 and out.logz_t.shape == (40,)


@pytest.mark.parametrize("k", [8, 0])
def test_best_class_is_the_teachers_argmax(cache_dir, k):
    lg = logits_for(0)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=k)
    assert np.array_equal(TeacherCache(cache_dir).read("a").best_class(), lg.argmax(-1).numpy())


def test_full_logits_cache_reads_back_with_all_class_indices(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0), k=0)
    cache = TeacherCache(cache_dir)
    out = cache.read("a")
    assert cache.entry("a").k == 0
    assert out.values.shape == (40, C) and out.logz_t is None
    assert np.array_equal(out.indices[7], np.arange(C))


def test_arrays_are_memory_mapped_from_the_shard(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
    values = TeacherCache(cache_dir).read("a").values
    assert isinstance(values.base, np.memmap) or isinstance(values.base.base, np.memmap)
    assert not values.flags.writeable


def test_index_is_json_and_shards_hold_only_the_records(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0, frames=33), k=8)
        write_song(w, "b", logits_for(1, frames=17), k=8)
    consolidate(cache_dir)
    index = json.loads((cache_dir / "index.json").read_text())
    entries = index["entries"]
    assert [e["song"] for e in entries] == ["a", "b"]
    shard = cache_dir / entries[0]["shard"]
    assert shard.stat().st_size == sum(e["nbytes"] for e in entries)
    # logz f4 [33] and logz_t f4 [33] (132 B, each padded to 136), values f2 [33, 8], indices u1 [33, 8]
    assert entries[0]["nbytes"] == 136 + 136 + 528 + 264
    assert all(e["offset"] % 8 == 0 for e in entries)


def test_entry_records_provenance(cache_dir):
    fp = AudioFingerprint("ab" * 20, 123, 456)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0), audio=fp)
    e = TeacherCache(cache_dir).entry("a")
    assert (e.teacher, e.features, e.fingerprint, e.frames, e.n_classes) == ("t", "f", fp, 40, C)
    assert e.checksum.startswith("blake2b-128:")


def test_cache_reports_its_class_count(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
        write_song(w, "b", logits_for(1))
    assert TeacherCache(cache_dir).n_classes == C


def test_unreadable_index_raises_naming_the_file(cache_dir):
    cache_dir.mkdir()
    (cache_dir / "index.json").write_text('{"format": "chordkd-teacher-cache", "vers')
    with pytest.raises(CacheError, match="index.json"):
        TeacherCache(cache_dir)


def test_missing_cache_folder_raises(tmp_path):
    with pytest.raises(CacheError, match="no such teacher cache"):
        TeacherCache(tmp_path / "nowhere")


def test_missing_song_error_names_cache_and_song(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
    with pytest.raises(CacheError, match=r"cache.*'nope'"):
        TeacherCache(cache_dir).read("nope")


def test_writer_refuses_indices_beyond_uint8(cache_dir):
    with CacheWriter(cache_dir) as w, pytest.raises(CacheError, match="256"):
        w.write_logits("a", np.zeros(2), np.zeros((2, 4)), np.zeros((2, 4)), 300,
                       audio=FP, teacher="t", features="f")


def test_second_kind_lives_beside_the_logits(cache_dir):
    emb = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float16)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
        w.write("a", "embedding", {"values": emb}, frames=10, k=0, n_classes=0, audio=FP,
                teacher="t", features="f")
    consolidate(cache_dir)
    assert TeacherCache(cache_dir).song_ids == ["a"]
    np.testing.assert_array_equal(TeacherCache(cache_dir, kind="embedding").arrays("a")["values"], emb)


# ---- crash safety ---------------------------------------------------------------------------


def test_pending_journal_is_readable_before_consolidation(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
    assert not (cache_dir / "index.json").exists()
    assert TeacherCache(cache_dir).song_ids == ["a"]


def test_torn_journal_line_is_ignored_and_the_rest_accepted(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
        write_song(w, "b", logits_for(1))
    journal = next(cache_dir.glob("journal-*.jsonl"))
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed mid-line
    cache = TeacherCache(cache_dir)
    assert cache.song_ids == ["a"]
    assert any(":2: unreadable journal line" in p for p in cache.problems)


def test_journal_line_pointing_past_a_truncated_shard_is_rejected(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
        e = write_song(w, "b", logits_for(1))
    shard = cache_dir / e.shard
    os.truncate(shard, e.offset + e.nbytes // 2)
    cache = TeacherCache(cache_dir)
    assert cache.song_ids == ["a"]
    assert any("'b'" in p or " b:" in p for p in cache.problems)


def test_journal_line_whose_bytes_fail_the_checksum_is_rejected(cache_dir):
    with CacheWriter(cache_dir) as w:
        e = write_song(w, "a", logits_for(0))
    with open(cache_dir / e.shard, "r+b") as f:
        f.seek(e.offset + 5)
        f.write(b"\xff\xff")
    assert TeacherCache(cache_dir).song_ids == []


def test_truncated_shard_after_consolidation_raises_naming_cache_and_song(cache_dir):
    with CacheWriter(cache_dir) as w:
        e = write_song(w, "a", logits_for(0))
    consolidate(cache_dir)
    os.truncate(cache_dir / e.shard, e.nbytes - 1)
    with pytest.raises(CacheError, match=r"cache.*'a'.*truncated"):
        TeacherCache(cache_dir).read("a")


def test_consolidate_folds_journals_and_drops_orphan_shards(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
    orphan = cache_dir / "shard-dead-r0-0000.bin"
    orphan.write_bytes(b"half a song")  # a killed writer that journaled nothing
    consolidate(cache_dir)
    assert not list(cache_dir.glob("journal-*")) and not orphan.exists()
    assert TeacherCache(cache_dir).song_ids == ["a"]
    consolidate(cache_dir)  # idempotent
    assert TeacherCache(cache_dir).song_ids == ["a"]


def test_later_write_of_a_song_supersedes_the_earlier(cache_dir):
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0))
    consolidate(cache_dir)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(1, frames=12))
    assert TeacherCache(cache_dir).frames("a") == 12  # journal over index
    consolidate(cache_dir)
    assert TeacherCache(cache_dir).frames("a") == 12
    assert len(list(cache_dir.glob("shard-*"))) == 1  # the superseded shard is gone


def test_cache_differences_ignore_layout_but_see_content(tmp_path):
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    with CacheWriter(one) as w:
        write_song(w, "a", logits_for(0))
        write_song(w, "b", logits_for(1))
    for song, seed in (("b", 1), ("a", 0)):  # other order, separate shards
        with CacheWriter(two) as w:
            write_song(w, song, logits_for(seed))
    consolidate(two)
    with CacheWriter(other) as w:
        write_song(w, "a", logits_for(0))
        write_song(w, "b", logits_for(2))
    assert cache_differences(one, two) == []
    assert any("('logits', 'b')" in d for d in cache_differences(one, other))


def test_audio_fingerprint_changes_with_the_audio_not_with_a_touch(tmp_path):
    f = tmp_path / "x.wav"
    f.write_bytes(b"abc" * 1000)
    fp = AudioFingerprint.of(f)
    os.utime(f, ns=(fp.mtime_ns + 10**9, fp.mtime_ns + 10**9))
    assert fp.matches(f)  # same bytes: rehashed, still matches
    f.write_bytes(b"abd" * 1000)
    assert not fp.matches(f)
    assert AudioFingerprint.of(f).sha1 != fp.sha1


# ---- reconstruction -------------------------------------------------------------------------


def test_rebuild_keeps_kept_probabilities_exact_at_t1(cache_dir):
    lg = logits_for(0)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=8)
    out = TeacherCache(cache_dir).read("a")
    lp = rebuilt(out, 1.0)
    kept = torch.gather(lp, 1, torch.from_numpy(out.indices.astype(np.int64)))
    torch.testing.assert_close(kept, torch.from_numpy(out.values.astype(np.float32)), atol=1e-4,
                               rtol=0)
    # the residual is spread uniformly over the 162 missing classes
    mask = torch.ones(40, C, dtype=torch.bool).scatter_(1, torch.from_numpy(out.indices.astype(np.int64)), False)
    missing = lp[mask].view(40, C - 8)
    assert torch.allclose(missing, missing[:, :1].expand_as(missing))
    # together they carry the teacher's own mass outside its top 8
    true_tail = (torch.softmax(lg, -1) * mask).sum(-1)
    # (to the float16 rounding of the kept log-probabilities)
    torch.testing.assert_close(missing.exp().sum(-1), true_tail, rtol=0, atol=5e-4)


def test_rebuild_of_full_logits_is_exact_at_any_temperature(cache_dir):
    lg = logits_for(0)
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=0)
    out = TeacherCache(cache_dir).read("a")
    for t in (1.0, 3.0, 0.5):
        assert kl(lg, rebuilt(out, t), t) < 1e-5


def peaked_logits(frames: int = 200) -> torch.Tensor:
    """A teacher sure of one class per frame: top-1 probability ~1 at T = 1, ~0.8 at T = 3."""
    lg = logits_for(0, frames=frames, scale=1.0)
    best = torch.randint(0, C, (frames,), generator=torch.Generator().manual_seed(1))
    lg[torch.arange(frames), best] += 20
    return lg


@pytest.mark.parametrize("k", [4, 8])
def test_rebuild_kl_is_small_at_t3_for_a_peaked_teacher(cache_dir, k):
    lg = peaked_logits()
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=k)
    out = TeacherCache(cache_dir).read("a")
    assert kl(lg, rebuilt(out, 3.0), 3.0) < 0.02
    assert kl(lg, rebuilt(out, 1.0), 1.0) < 1e-3
    assert torch.equal(rebuilt(out, 1.0).argmax(-1), lg.argmax(-1))


def test_cached_tempered_partition_beats_the_uniform_tail_at_t3(cache_dir):
    lg = peaked_logits()
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", lg, k=8)
    out = TeacherCache(cache_dir).read("a")
    without = out._replace(logz_t=None, tail_temperature=None)
    assert kl(lg, rebuilt(out, 3.0), 3.0) < 0.1 * kl(lg, rebuilt(without, 3.0), 3.0)


# ---- transposition --------------------------------------------------------------------------


def test_transposed_indices_keep_n_and_x():
    vocab = get_vocabulary("large")
    idx = torch.tensor([[vocab.n_index, vocab.x_index, vocab.encode("C:maj"), vocab.encode("A:min7")]],
                       dtype=torch.uint8)
    moved = transpose_indices(idx, vocab.transpose_index_map(3))
    assert moved.dtype == torch.uint8
    assert moved.tolist() == [[vocab.n_index, vocab.x_index, vocab.encode("D#:maj"),
                               vocab.encode("C:min7")]]
    assert np.array_equal(transpose_indices(idx.numpy(), vocab.transpose_index_map(3)), moved.numpy())


def test_rebuild_of_transposed_indices_is_the_transposed_distribution(cache_dir):
    vocab = get_vocabulary("large")
    with CacheWriter(cache_dir) as w:
        write_song(w, "a", logits_for(0), k=8)
    out = TeacherCache(cache_dir).read("a")
    index_map = vocab.transpose_index_map(-5)
    moved = out._replace(indices=transpose_indices(np.array(out.indices), index_map))
    expected = torch.empty(40, C)
    expected[:, torch.from_numpy(index_map)] = rebuilt(out, 3.0)  # new[..., map] = old
    torch.testing.assert_close(rebuilt(moved, 3.0), expected)
