"""The Markdown report of ``make bench`` (``bench/results.md``), from ``run_all``'s results."""

from __future__ import annotations

import madmom_teacher
import transcription_peers


def _load(sec: dict) -> str:
    b, a = sec["load_average_before"][0], sec["load_average_after"][0]
    return f"load {b:.1f} -> {a:.1f}, {sec['wall_seconds']:.0f} s"


def markdown(r: dict) -> str:
    m = r["machine"]
    mb = 2**20
    lines = [
        "# chordkd benchmarks (`make bench`)", "",
        f"Measured {r['started']} by `{r['command']}`{' (quick)' if r['quick'] else ''}, "
        f"{r['wall_seconds'] / 60:.1f} min in all.", "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['threads_used']} threads used, torch "
        f"{m['torch']}, Python {m['python']}, OMP_WAIT_POLICY {m.get('omp_wait_policy') or 'unset'}. "
        f"1-minute load average {r['load_average_before'][0]:.2f} "
        f"before, {r['load_average_after'][0]:.2f} after (other jobs share this machine: a load "
        f"above the core count means every figure below is pessimistic).", "",
        "GPU: " + (f"{m['gpu']}, measured (rows marked cuda)." if "cuda" in r["devices"]
                   else "not run (torch.cuda.is_available() is False on this machine)."), "",
        "## Targets", "",
        "| target | measured | threshold | holds |", "|---|---:|---:|---|",
    ]
    for v in r["verdicts"]:
        meas = (f"{v['measured'] / mb:.1f} MiB" if "RssAnon" in v["target"] else f"{v['measured']:.2f}")
        thr = (f"{v['threshold'] / mb:.0f} MiB" if "RssAnon" in v["target"] else f"{v['threshold']:g}")
        lines.append(f"| {v['target']} | {meas} | {thr} | {'yes' if v['holds'] else '**no**'} |")

    lines += ["", f"## 1. CQT front end ({_load(r['cqt']['section'])})", "",
              "| device | audio | LogCQT | nnAudio CQT1992v2 (untrimmed) | librosa.cqt (CPU) | LogCQT / librosa |",
              "|---|---:|---:|---:|---:|---:|"]
    for dev in r["devices"]:
        c = r["cqt"][dev]
        lines.append(f"| {dev} | {c['audio_seconds']:.0f} s | {c['logcqt']['x_real_time']:.0f}x real time | "
                     f"{c['nnaudio_cqt1992v2']['x_real_time']:.0f}x | {c['librosa_cqt']['x_real_time']:.0f}x | "
                     f"{c['speedup']:.2f} |")
    ag = r["cqt"]["cpu"]["agreement_vs_librosa_defaults"]
    lines += ["", f"LogCQT vs librosa on this audio: argmax bin agreement {ag['argmax_agreement']:.4f}, "
              f"median relative magnitude error {ag['rel_mag_err_median']:.4f}."]

    lines += ["", f"## 2. Stage-1 data path ({_load(r['data_path']['section'])})", "",
              "Batch 32 x 108 frames; the three data paths interleaved round by round in one process, "
              "best round of each. The training step is section 4's BTC-base fp32 row (median of its "
              "timed steps, [min, max]): one measurement for both tables.", "",
              "| device | path | windows/s | frames/s | one epoch over 1,000 h | time split |",
              "|---|---|---:|---:|---:|---|"]
    for dev in r["devices"]:
        d = r["data_path"][dev]
        for key, name in (("cached", "chordkd: TeacherDataModule + LogCQT on the device"),
                          ("offline", "offline peer (BTC, ChordMini): stored librosa CQT + targets, read per window"),
                          ("online", "online peer: soundfile + librosa.cqt per window, teacher per batch"),
                          ("train_step", "BTC-base training step, fp32 (section 4)")):
            row = d[key]
            parts = ", ".join(f"{k.replace('_seconds', '')} {v:.2f} s" for k, v in row.get("parts", {}).items())
            rate = f"{row['windows_per_second']:.1f}"
            if "windows_per_second_min" in row:
                rate += f" [{row['windows_per_second_min']:.1f}, {row['windows_per_second_max']:.1f}]"
            lines.append(f"| {dev} | {name} | {rate} | {row['frames_per_second']:.0f} | "
                         f"{row['epoch_hours_for_1000h']:.1f} h | {parts} |")
        prep = d["offline"]["preprocessing"]
        lines += ["", f"{dev}: cached / online **{d['cached_over_online']:.1f}x**, cached / offline "
                  f"**{d['cached_over_offline']:.3g}x**, cached / training step "
                  f"**{d['cached_over_train_step']:.1f}x**: a stage-1 epoch is bound by the "
                  f"{d['stage1_epoch_bound_by']} ({d['windows_per_audio_hour']:.0f} windows per audio-hour). "
                  f"The offline peer's preprocessing ran at {prep['x_real_time']:.0f}x real time and stores "
                  f"{prep['stored_bytes_per_audio_hour'] / 1e6:.0f} MB per audio-hour unshifted, "
                  f"{prep['stored_bytes_per_audio_hour_with_btc_pitch_shifts'] / 1e6:.0f} MB with BTC's 12 "
                  "pitch shifts (chordkd shifts on the fly).", ""]

    lab = r["labelling"]
    lines += [f"## 3. Labelling and the teacher cache ({_load(lab['section'])})", "",
              "| device | precision | audio | end to end | steady state | cache bytes per audio-hour |",
              "|---|---|---:|---:|---:|---:|"]
    for dev, run in lab["runs"].items():
        lines.append(f"| {dev} | {run['precision']} | {run['audio_seconds'] / 60:.0f} min | "
                     f"{run['end_to_end_x_real_time']:.0f}x real time | {run['steady_state_x_real_time']:.0f}x | "
                     f"{run['cache_bytes_per_audio_hour'] / 1e6:.2f} MB |")
    st = lab["runs"]["cpu"]["stage_x_real_time"]
    lines += ["", "CPU stages alone (x real time): " + ", ".join(f"{k} {v:.0f}x" for k, v in st.items()) + ".", "",
              f"Fidelity of the cache, teacher `{lab['fidelity']['teacher']}` on "
              f"{lab['fidelity']['audio_seconds'] / 60:.1f} min (mean top-1 probability "
              f"{lab['fidelity']['teacher_stats']['mean_top1_prob_T1']:.3f}):", "",
              "| K | bytes/frame | MB per audio-hour | argmax agreement | mean KL T=1 | mean KL T=3 |",
              "|---|---:|---:|---:|---:|---:|"]
    for row in lab["fidelity"]["rows"]:
        lines.append(f"| {row['k']}{' + logZ(T=3)' if row['tail_logz_T3'] else ''} | {row['bytes_per_frame']:.1f} | "
                     f"{row['mb_per_audio_hour']:.2f} | {100 * row['argmax_agreement']:.2f}% | "
                     f"{row['mean_kl_T1']:.1e} | {row['mean_kl_T3']:.1e} |")

    tr = r["training"]
    lines += ["", f"## 4. Training throughput and peak memory ({_load(tr['section'])})", "",
              "Batch 32 x 108 frames, forward + focal loss + backward + AdamW; one process per row; "
              "frames/s of the median timed step after a warm-up step, [slowest, fastest].", "",
              "| device | student | precision | parameters | frames/s | windows/s | steps | peak memory |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in tr["rows"]:
        util = row.get("gpu_utilisation", {})
        extra = f" (GPU busy {util['mean_percent']:.0f}%)" if "mean_percent" in util else ""
        lines.append(f"| {row['device']} | {row['student']} | {row['precision']} | {row['parameters']:,} | "
                     f"{row['frames_per_second']:.0f} [{row['frames_per_second_min']:.0f}, "
                     f"{row['frames_per_second_max']:.0f}] | {row['windows_per_second']:.1f} | {row['steps']} | "
                     f"{row['peak_memory_bytes'] / mb:.0f} MiB{extra} |")
    lines += ["", "CPU memory: peak RSS after the steps minus peak RSS before the model was built "
              "(`VmHWM`; `ru_maxrss` would carry the parent's peak across `exec`); CUDA: "
              "`torch.cuda.max_memory_allocated`."]

    sc = r["scaling"]
    lines += ["", f"## 5. Scaling the corpus ({_load(sc['section'])})", "",
              f"Corpora: {sc['replication']}. CPU, batch 32. Windows/s: all sizes interleaved "
              "round by round in one process (best round); in brackets, each size alone in its "
              "own process, where the memory figures come from.", "",
              "| size | songs | audio | windows/s | audio cache per hour | teacher cache per hour "
              "| RssAnon after batches | RssFile after batches | setup |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, row in sc["rows"].items():
        mem = row["memory_bytes"]["after_batches"]
        lines.append(f"| {n}x | {row['songs']} | {row['audio_hours'] * 60:.0f} min | {row['windows_per_second']:.1f} "
                     f"({row['windows_per_second_own_process']:.1f}) | "
                     f"{row['audio_cache_bytes_per_hour'] / 1e6:.0f} MB | {row['teacher_cache_bytes_per_hour'] / 1e6:.2f} MB | "
                     f"{mem['RssAnon'] / mb:.0f} MiB | {mem['RssFile'] / mb:.0f} MiB | {row['setup_seconds']:.1f} s |")
    lines += ["", "RssFile counts the memory-mapped caches' pages this process touched (reclaimable "
              "page cache); RssAnon is the process's own heap."]
    lines += levers_markdown(r["levers"]) + transcription_markdown(r["transcription"])
    mm = r.get("madmom", {})
    if "section" in mm:
        lines += ["", f"## 8. madmom teachers ({_load(mm['section'])})", ""]
        # madmom_teacher.markdown without its title line
        lines.append(f"Not run: {mm['skipped']}" if "skipped" in mm
                     else madmom_teacher.markdown(mm).split("\n", 2)[2])
    lines += ["", "## Commands", "",
              f"- `{r['command']}`"]
    lines += [f"- {k}: `{v}`" for k, v in r["commands"].items()]
    lines += [f"- `{c}`" for c in r["training"]["commands"] + r["scaling"]["commands"]
              + r["levers"]["commands"]]
    return "\n".join(lines) + "\n"


def levers_markdown(lv: dict) -> list[str]:
    lines = ["", f"## 6. Training-step levers ({_load(lv['section'])})", "",
             "fp32, batch 32 x 108 unless the lever is the batch. All levers of one student and size in one "
             "process, one step each per round; frames/s is the median over rounds [min, max]; the "
             "ratio is the median of the per-round ratios to eager [min, max]; warm-up includes "
             "compilation. Peak memory (base size): each lever in its own process.", "",
             "| device | student | size | lever | frames/s | over eager | warm-up | peak memory |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for run in lv["runs"]:
        for row in run["rows"].values():
            mem = f"{row['peak_memory_bytes'] / 2**20:.0f} MiB" if "peak_memory_bytes" in row else ""
            lines.append(f"| {run['device']} | {run['student']} | {run['size']} | {row['lever']} | "
                         f"{row['frames_per_second']:.0f} [{row['frames_per_second_min']:.0f}, "
                         f"{row['frames_per_second_max']:.0f}] | {row['over_eager']:.2f}x "
                         f"[{row['over_eager_min']:.2f}, {row['over_eager_max']:.2f}] | "
                         f"{row['warm_up_seconds']:.1f} s | {mem} |")
    lines += ["", "Equivalence with eager (small size, 3 steps from the same weights on the same batch, "
              "dropout off):", "", "| student | lever | max abs weight difference | max abs weight update |",
              "|---|---|---:|---:|"]
    for e in lv["equivalence"]:
        lines.append(f"| {e['student']} | {e['lever']} | {e['max_abs_weight_difference']:.1e} | "
                     f"{e['max_abs_weight_update']:.1e} |")
    if lv.get("wait_policy"):
        lines += ["", "OpenMP wait policy (base size, fp32, chordkd's default AdamW; one process per policy "
                  "per round, policies alternating; frames/s: median over rounds of each process's median step):",
                  "", "| student | threads | OpenMP default | OMP_WAIT_POLICY=PASSIVE | PASSIVE over default "
                  "| same weights, bit for bit |", "|---|---:|---:|---:|---:|---|"]
        for w in lv["wait_policy"]:
            fps = list(w["frames_per_second"].values())
            lines.append(f"| {w['student']} | {w['threads']} | {fps[0]:.0f} | {fps[1]:.0f} | "
                         f"{w['passive_over_default']:.2f}x [{w['passive_over_default_min']:.2f}, "
                         f"{w['passive_over_default_max']:.2f}] | {'yes' if w['bitwise_equal'] else 'no'} |")
    lines += ["", "`optimizer.step()` alone, base size, random gradients (median of 15):", "",
              "| student | threads | for-loop | foreach | fused |", "|---|---:|---:|---:|---:|"]
    by = {(o["student"], o["threads"], o["implementation"]): o["median_seconds"] for o in lv["optimizer_step"]}
    for student, threads in dict.fromkeys((o["student"], o["threads"]) for o in lv["optimizer_step"]):
        lines.append(f"| {student} | {threads} | " + " | ".join(
            f"{1e3 * by[(student, threads, impl)]:.1f} ms" for impl in ("for-loop", "foreach", "fused")) + " |")
    lines += ["", "Where the eager fp32 step's time goes (base size, 1 thread, `torch.profiler`, self time):", ""]
    for prof in lv["profiles"]:
        lines.append(f"- {prof['student']}: " + ", ".join(
            f"`{t['op']}` {100 * t['fraction']:.0f}%" for t in prof["top"]))
    dm = lv["dropout_mask"]
    lines += ["", f"One dropout mask of shape {dm['shape']} ({dm['threads']} threads): `bernoulli_` "
              f"{1e3 * dm['bernoulli_seconds']:.1f} ms, `rand < p` {1e3 * dm['rand_less_than_seconds']:.1f} ms, "
              f"a softmax of the same tensor {1e3 * dm['softmax_seconds']:.1f} ms."]
    return lines


def transcription_markdown(tr: dict) -> list[str]:
    lines = ["", f"## 7. Transcription against madmom ({_load(tr['section'])})", "",
             f"{tr['songs']} rendered songs ({tr['audio_seconds'] / 60:.1f} min, `chordkd synth`), every "
             "system in turn song by song in one process, from the audio file to intervals (madmom: "
             "decoding and resampling to 44.1 kHz included); models loaded before the clock starts. "
             "WCSR in percent. madmom's models know major, minor and N only.", ""]
    return lines + transcription_peers.markdown_rows(tr)
