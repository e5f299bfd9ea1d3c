"""Speech separation benchmark: SSM separators vs Conv-TasNet, same data and same CPU budget.

1. Metric check: PIT SI-SNRi of the published SPMamba and Conv-TasNet outputs on the 5 Echo2Mix
   demo mixtures (expected 16.76 and 9.40 dB).
2. Training at equal budget: Mamba-TasNet, DPMamba, SPMamba and torchaudio's Conv-TasNet train
   on the espeak-ng corpus (``python -m ssmkit.audio.espeak_corpus``; dynamic mixing of the
   training speakers, 1 s segments) for the same number of single-thread CPU seconds each
   (process CPU time, so the runs in parallel are fair even on a shared machine). SI-SNRi / SDRi
   on the held-out mixtures of unseen speakers, and on the Echo2Mix demo (real reverberant
   speech, out of domain; resampled 16 -> 8 kHz).
3. Inference throughput (seconds of audio per second, wall and CPU) and peak memory (RSS the
   forward adds) at 10 s and 60 s, published XS sizes vs Conv-TasNet, one fresh process per cell.

    ssmkit bench separation [--quick] [--corpus DIR] [--budget-min 12] [--runs DIR]
    ssmkit bench separation --speed-only [--lengths 10 60] [--repeats 3]   # part 3 only

On a GPU: ``--train-one LABEL --device cuda`` trains one model for ``--budget-min`` minutes of
GPU wall time, ``--speed-only --device cuda`` writes part 3b.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "echo2mix_demo"
RATE = 8000

# Small configurations that learn something in minutes of one CPU core, chosen so that a training
# step costs about the same CPU time (Mamba-TasNet 4 blocks ~1.1x Conv-TasNet's step; DPMamba's
# dual paths cost ~1.3x at 1 layer and ~2.6x at 2); the published XS sizes are measured for
# speed/memory in part 3.
TRAIN_MODELS: dict[str, tuple[str, dict]] = {
    "Mamba-TasNet (N=64, 4 blocks)": (
        "audio.mamba_tasnet_xs",
        {"n_filters": 64, "d_model": 64, "n_layers": 4},
    ),
    # ssmkit's input_norm option (the authors' norm is per frame): 6.43 against 6.10 dB at 12
    # CPU-min over 4 seeds (benchmarks/results/separation.md, session 7)
    "Mamba-TasNet (N=64, 4 blocks, gLN input)": (
        "audio.mamba_tasnet_xs",
        {"n_filters": 64, "d_model": 64, "n_layers": 4, "input_norm": "gln"},
    ),
    "DPMamba (N=64, 2 dual-path layers, K=100)": (
        "audio.dpmamba_xs",
        {"n_filters": 64, "n_layers": 2, "chunk_size": 100},
    ),
    "DPMamba (N=64, 1 dual-path layer, K=100)": (
        "audio.dpmamba_xs",
        {"n_filters": 64, "n_layers": 1, "chunk_size": 100},
    ),
    # expand 1 halves the Mamba width (and the scan): 2 layers for ~1.4x Conv-TasNet's step
    "DPMamba (N=64, 2 dual-path layers, K=100, expand 1)": (
        "audio.dpmamba_xs",
        {"n_filters": 64, "n_layers": 2, "chunk_size": 100, "expand": 1},
    ),
    # session 8: cheaper steps for the CPU budget (a DPMamba step learns more than a Conv-TasNet
    # step on the GPU, where the two cost about the same): N=48 costs ~1.0x Conv-TasNet's step,
    # K=50 ~1.2x (the K=100, N=64 configuration above ~1.4x)
    "DPMamba (N=48, 2 dual-path layers, K=100, expand 1)": (
        "audio.dpmamba_xs",
        {"n_filters": 48, "n_layers": 2, "chunk_size": 100, "expand": 1},
    ),
    "DPMamba (N=64, 2 dual-path layers, K=50, expand 1)": (
        "audio.dpmamba_xs",
        {"n_filters": 64, "n_layers": 2, "chunk_size": 50, "expand": 1},
    ),
    # TF-domain: every (frame, frequency) bin is a token, so even this 0.05 M configuration (one
    # block, emb 8, 32 ms / 8 ms STFT at 8 kHz like the published 512 / 128 at 16 kHz) costs
    # ~2.5x Conv-TasNet's step
    "SPMamba (emb 8, 1 block, STFT 256/64)": (
        "audio.spmamba",
        {
            "n_fft": 256,
            "hop_length": 64,
            "emb_dim": 8,
            "emb_ks": 4,
            "emb_hs": 2,
            "n_layers": 1,
            "expand": 2,
            "n_heads": 2,
        },
    ),
    "Conv-TasNet (torchaudio, N=64, B=48, H=128, X=8, R=2)": (
        "audio.conv_tasnet",
        {
            "enc_num_feats": 64,
            "msk_num_feats": 48,
            "msk_num_hidden_feats": 128,
            "msk_num_stacks": 2,
        },
    ),  # fmt: skip
}
# peak lr 3e-3 for all: a 1e-3 vs 3e-3 pilot (train SI-SNR after 550-900 steps) favoured
# 3e-3 for Mamba-TasNet and for Conv-TasNet alike
LR, WARMUP, FINAL_LR_FRACTION, BATCH, SEGMENT_S = 3e-3, 100, 0.1, 4, 1.0
SPEED_MODELS: dict[str, tuple[str, dict]] = {
    "Mamba-TasNet-XS": ("audio.mamba_tasnet_xs", {}),
    "DPMamba-XS": ("audio.dpmamba_xs", {}),
    "Conv-TasNet": ("audio.conv_tasnet", {}),
}


# file stem of a run's checkpoint and log in --runs: the label's first word, unless another
# label starts with the same word
FILE_STEMS = {
    "Mamba-TasNet (N=64, 4 blocks, gLN input)": "mamba_tasnet_gln",
    "DPMamba (N=64, 1 dual-path layer, K=100)": "dpmamba_1layer",
    "DPMamba (N=64, 2 dual-path layers, K=100, expand 1)": "dpmamba_expand1",
    "DPMamba (N=48, 2 dual-path layers, K=100, expand 1)": "dpmamba_n48",
    "DPMamba (N=64, 2 dual-path layers, K=50, expand 1)": "dpmamba_k50",
}


def slug(label: str) -> str:
    return FILE_STEMS.get(label) or label.split(" ")[0].lower().replace("-", "_")


# ----------------------------------------------------------------------------------------------
# 1. metric check


def metric_check() -> list[str]:
    from ssmkit.audio.io import read_audio
    from ssmkit.audio.metrics import sdr_improvement, si_snr_improvement

    if not SHARED.is_dir():
        return [f"(skipped: {SHARED} not found)"]
    rows = []
    for system, expected in (("spmamba", 16.76), ("convtasnet", 9.40)):
        snri, sdri = [], []
        for clip in sorted((SHARED / "gt").iterdir()):
            mix, rate = read_audio(clip / "mix.wav", 16000)
            refs = torch.stack([read_audio(clip / f"spk{k}_reverb.wav", rate)[0] for k in (1, 2)])
            est = torch.stack(
                [read_audio(SHARED / system / clip.name / f"s{k}.wav", rate)[0] for k in (1, 2)]
            )
            snri.append(float(si_snr_improvement(est[None], refs[None], mix[None])))
            sdri.append(float(sdr_improvement(est[None], refs[None], mix[None])))
        rows.append(
            f"| {system} (published outputs) | {statistics.mean(snri):.2f} | {expected:.2f} | "
            f"{statistics.mean(sdri):.2f} |"
        )
    return rows


# ----------------------------------------------------------------------------------------------
# 2. training at equal CPU budget


def lr_factor(step: int, cpu_fraction: float) -> float:
    """Linear warm-up over ``WARMUP`` steps, then cosine decay to ``FINAL_LR_FRACTION`` of the
    peak over the CPU budget (the budget is time, not steps, so the schedule follows time)."""
    warm = min(1.0, (step + 1) / WARMUP)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, cpu_fraction)))
    return warm * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def train_one(
    label: str,
    corpus: Path,
    budget_s: float,
    out: Path,
    seed: int,
    ckpt_every_s: float = 120.0,
    device: str = "cpu",
) -> None:
    """Train one model for ``budget_s`` seconds; checkpoint + log every ``ckpt_every_s`` seconds
    and at the end (so a cut-short run still has a result).

    On the CPU the budget is process CPU time of one thread. On a GPU (``device="cuda"``) it is
    wall time from the end of the first step (which compiles and autotunes the kernels), with
    four loader processes (per-index seeded mixtures) feeding the device; the recipe is the same.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gpu = device != "cpu"
    clock = time.perf_counter if gpu else time.process_time
    import ssmkit
    from ssmkit.audio.data import DynamicMixtures
    from ssmkit.audio.metrics import pit_si_snr
    from ssmkit.audio.separate import save_separator

    name, kwargs = TRAIN_MODELS[label]
    model = ssmkit.create_model(name, **kwargs).to(device)
    data = DynamicMixtures(corpus / "train", RATE, segment=SEGMENT_S, epoch_size=10**9, seed=seed,
                           deterministic=gpu)  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, num_workers=4 if gpu else 0,
                                         pin_memory=gpu, persistent_workers=gpu)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    log, step, start, next_ckpt, loads = [], 0, clock(), ckpt_every_s, []

    def save(done: bool) -> None:
        save_separator(out / f"{slug(label)}.pt", model.cpu(), name, kwargs, RATE)
        model.to(device)
        meta = {"label": label, "steps": step, "cpu_s": clock() - start, "device": device,
                "loss": log, "params": sum(p.numel() for p in model.parameters()),
                "done": done, "load_avg": loads, "recipe": recipe()}  # fmt: skip
        if gpu:
            meta["gpu"] = torch.cuda.get_device_name()
        write_text_atomic(out / f"{slug(label)}.json", json.dumps(meta))

    for mixture, sources in loader:
        mixture, sources = mixture.to(device, non_blocking=True), sources.to(device)
        used = clock() - start
        for group in opt.param_groups:
            group["lr"] = LR * lr_factor(step, used / budget_s)
        loss = pit_si_snr(model(mixture), sources)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        log.append(float(loss.detach()))  # synchronises with the GPU
        if gpu and step == 1:
            start = clock()  # the budget starts after compilation and autotuning
        used = clock() - start
        if step % 25 == 0:
            loads.append(os.getloadavg()[0])
            recent = statistics.mean(log[-25:])
            print(f"{label}: step {step} loss {recent:.2f} cpu {used:.0f}s load {loads[-1]:.1f}",
                  flush=True)  # fmt: skip
        if used >= budget_s:
            break
        if used >= next_ckpt:
            save(done=False)
            next_ckpt += ckpt_every_s
    save(done=True)


def recipe() -> str:
    return (
        f"Adam {LR:g}, {WARMUP}-step linear warm-up then cosine decay to {FINAL_LR_FRACTION:g}x over"
        f" the CPU budget, clip 5, batch {BATCH} x {SEGMENT_S:g} s"
    )


def train_all(corpus: Path, budget_s: float, out: Path, seed: int, jobs: int) -> None:
    """Train every model of ``TRAIN_MODELS`` in its own one-thread process, ``jobs`` at a time.

    ``jobs`` no larger than the core count keeps each process on a core of its own. Budgets are
    process CPU time, and oversubscribed cores inflate it unevenly across models (cache and
    memory traffic of the other processes): six runs on two cores cost Conv-TasNet 0.35 CPU-s
    per step against 0.28 alone on its core, the 1-layer DPMamba 0.45 against 0.41.
    """
    out.mkdir(parents=True, exist_ok=True)
    commands = []
    for label in TRAIN_MODELS:
        if (out / f"{slug(label)}.pt").exists():
            print(f"{label}: checkpoint exists in {out}, not retraining", flush=True)
            continue
        commands.append([sys.executable, __file__, "--train-one", label, "--corpus", str(corpus),
                         "--budget-min", str(budget_s / 60), "--runs", str(out),
                         "--seed", str(seed)])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(lambda cmd: subprocess.run(cmd, env=env), commands))
    failed = [run.args for run in done if run.returncode != 0]
    if failed:
        raise RuntimeError(f"training run(s) failed: {failed}")


@torch.no_grad()
def evaluate(model: torch.nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple:
    from ssmkit.audio.metrics import sdr_improvement, si_snr_improvement

    snri, sdri = [], []
    for mix, refs in pairs:
        est = model(mix[None])
        snri.append(float(si_snr_improvement(est, refs[None], mix[None])))
        sdri.append(float(sdr_improvement(est, refs[None], mix[None])))
    return statistics.mean(snri), statistics.mean(sdri)


def held_out_pairs(corpus: Path, limit: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from ssmkit.audio.data import MetadataMixtures

    data = MetadataMixtures(corpus / "test_mix" / "metadata.csv", RATE)
    return [data[i] for i in range(len(data) if limit is None else min(limit, len(data)))]


def echo2mix_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    from ssmkit.audio.io import read_audio, resample

    pairs = []
    for clip in sorted((SHARED / "gt").iterdir()) if SHARED.is_dir() else []:
        mix, rate = read_audio(clip / "mix.wav", 16000)
        refs = torch.stack([read_audio(clip / f"spk{k}_reverb.wav", rate)[0] for k in (1, 2)])
        pairs.append((resample(mix, rate, RATE), resample(refs, rate, RATE)))
    return pairs


def training_table(runs: Path, corpus: Path, limit: int | None) -> list[str]:
    """Evaluate the checkpoints, one single-thread process each, in parallel."""
    missing = [label for label in TRAIN_MODELS if not (runs / f"{slug(label)}.pt").exists()]
    if missing:
        raise FileNotFoundError(
            f"{runs} has no checkpoint for {missing} (runs from before a model joined the"
            " benchmark lack it); train it with --train-one LABEL --runs DIR, or evaluate the"
            " models that are there one by one with --eval-one LABEL."
        )
    procs = []
    for label in TRAIN_MODELS:
        cmd = [sys.executable, __file__, "--eval-one", label, "--runs", str(runs), "--corpus",
               str(corpus), "--limit", str(limit or 0)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))  # fmt: skip
    rows = [proc.communicate()[0].strip().splitlines()[-1] for proc in procs]
    print("\n".join(rows), flush=True)
    return rows


def eval_one(label: str, runs: Path, corpus: Path, limit: int | None) -> None:
    """Print the results row of one trained checkpoint (held-out and Echo2Mix SI-SNRi / SDRi)."""
    from ssmkit.audio.separate import load_separator

    torch.set_num_threads(1)
    held, echo = held_out_pairs(corpus, limit), echo2mix_pairs()
    meta = json.loads((runs / f"{slug(label)}.json").read_text())
    model, _ = load_separator(runs / f"{slug(label)}.pt")
    h_snr, h_sdr = evaluate(model, held)
    e_snr, e_sdr = evaluate(model, echo) if echo else (math.nan, math.nan)
    final = statistics.mean(meta["loss"][-25:])
    print(
        f"| {label} | {meta['params'] / 1e6:.2f} | {meta['cpu_s'] / 60:.1f} | {meta['steps']} | "
        f"{-final:.2f} | {h_snr:.2f} / {h_sdr:.2f} ({len(held)} mixtures) | "
        f"{e_snr:.2f} / {e_sdr:.2f} |",
        flush=True,
    )


# ----------------------------------------------------------------------------------------------
# 3. throughput and memory


def _rss_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(label: str, seconds: float, repeats: int, device: str = "cpu") -> dict:
    """In a fresh process (one thread, batch 1, no grad): median wall and CPU time of a forward
    on ``seconds`` of audio, and the peak memory the forward adds.

    CPU memory: the kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` = 5) after the
    model and input exist and one short warm-up forward ran; ``VmHWM - VmRSS`` after the timed
    forwards is the peak extra memory of the forward (activations, scan buffers, workspace).
    On a GPU: synchronised wall time after a full-length warm-up forward (kernel compilation and
    autotuning), and ``torch.cuda.max_memory_allocated`` above the allocation before the forwards.
    """
    import ssmkit

    torch.set_num_threads(1)
    gpu = device != "cpu"
    name, kwargs = SPEED_MODELS[label]
    model = ssmkit.create_model(name, **kwargs).eval().to(device)
    x = torch.randn(1, int(seconds * RATE), device=device)
    walls, cpus = [], []
    with torch.no_grad():
        model(x if gpu else x[:, : RATE // 2])  # warm-up: lazy imports, allocator, compilation
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        else:
            base = _rss_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            out = model(x)
            if gpu:
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            del out
        peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else _rss_mb("VmHWM")
    return {
        "wall": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "mem_mb": peak - base,
        "params": sum(p.numel() for p in model.parameters()),
    }


def speed_rows(
    lengths: list[float], repeats: int, timeout_s: float, device: str = "cpu"
) -> list[str]:
    """One fresh single-thread process per (length, model), one after another (so that the cells
    do not compete for cores); rows of the markdown table."""
    rows = []
    for seconds in lengths:
        for label in SPEED_MODELS:
            cmd = [sys.executable, __file__, "--measure-one", label, "--seconds", str(seconds),
                   "--repeats", str(repeats), "--device", device]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=timeout_s)  # fmt: skip
            except subprocess.TimeoutExpired:
                rows.append(f"| {seconds:.0f} s | {label} | not measured (over {timeout_s:.0f} s) "
                             "| | | |")  # fmt: skip
                continue
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                rows.append(f"| {seconds:.0f} s | {label} | failed: {tail[0]} | | | |")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(
                f"| {seconds:.0f} s | {label} ({res['params'] / 1e6:.1f}M) | "
                f"{seconds / res['wall']:.2f} | {seconds / res['cpu']:.2f} | {res['wall']:.2f} | "
                f"{res['mem_mb']:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def speed_section(
    lengths: list[float], repeats: int, timeout_s: float, device: str = "cpu"
) -> list[str]:
    rows = speed_rows(lengths, repeats, timeout_s, device)
    lengths_arg = " ".join(f"{s:g}" for s in lengths)
    command = f"`ssmkit bench separation --speed-only --lengths {lengths_arg} --repeats {repeats}"
    if device != "cpu":
        return [
            "## 3b. Inference throughput and memory vs length on a GPU (batch 1, no grad, 8 kHz)",
            "",
            f"{command} --device {device}`: {torch.cuda.get_device_name()}, torch"
            f" {torch.__version__}; one fresh process per cell; synchronised wall time, median of"
            " the repeats after a full-length warm-up forward (compilation, autotuning);"
            " published sizes. Memory = peak CUDA allocation the forward adds above the loaded"
            " model and input. The `audio s / CPU s` column is the host process's CPU time.",
            "",
            "| length | model | audio s / wall s | audio s / CPU s | wall s | peak memory (MB) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    load = os.getloadavg()
    return [
        "## 3. Inference throughput and memory vs length (one thread, batch 1, no grad, 8 kHz)",
        "",
        f"{command}`: one"
        " fresh process per cell, run one after another; median of the repeats; published sizes."
        " Throughput = seconds of audio per second (wall, and per process-CPU second). Memory ="
        " peak RSS the forward adds above the loaded model (peak-RSS mark reset before the"
        f" timed forwards). torch {torch.__version__}, {os.cpu_count()} cores, load average at the"
        f" end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min).",
        "",
        "| length | model | audio s / wall s | audio s / CPU s | wall s | peak memory (MB) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def replace_section(path: Path, heading: str, lines: list[str]) -> None:
    """Replace the ``## <heading>...`` section of a results file (or append it)."""
    text = path.read_text() if path.exists() else "# Speech separation benchmark\n"
    parts = text.split("\n## ")
    new = "\n".join(lines).removeprefix("## ").rstrip("\n") + "\n"
    kept = [p if not p.startswith(heading) else new for p in parts]
    if kept == parts:
        kept.append(new)
    write_text_atomic(path, "\n## ".join(kept).rstrip("\n") + "\n")


def profile_one(label: str, repeats: int, top: int = 8) -> dict:
    """CPU time of one training step (forward, PIT SI-SNR, backward, Adam) at the training
    configuration, batch ``BATCH`` x ``SEGMENT_S`` s, one thread, after three warm-up steps; plus the ``top`` operators by
    self CPU time from ``torch.profiler`` for one more step."""
    import ssmkit
    from ssmkit.audio.metrics import pit_si_snr

    torch.set_num_threads(1)
    torch.manual_seed(0)
    name, kwargs = TRAIN_MODELS[label]
    model = ssmkit.create_model(name, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    mixture = torch.randn(BATCH, int(SEGMENT_S * RATE))
    sources = torch.randn(BATCH, 2, mixture.shape[-1])

    def step() -> None:
        loss = pit_si_snr(model(mixture), sources)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator and kernel scratch reach their steady state
        step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {
        "step_s": statistics.median(times),
        "ops": [(e.key, 100 * e.self_cpu_time_total / total, e.count) for e in events[:top]],
    }


def profile_section(repeats: int) -> list[str]:
    rows, details = [], []
    for label in TRAIN_MODELS:
        cmd = [sys.executable, __file__, "--profile-one", label, "--repeats", str(repeats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(f"| {label} | {res['step_s']:.2f} | {60 / res['step_s']:.0f} |")
        ops = ", ".join(f"{k} {pct:.0f} % ({n})" for k, pct, n in res["ops"])
        details.append(f"- {label}: {ops}")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    return [
        "## 4. Cost of one training step (one thread)",
        "",
        f"`ssmkit bench separation --profile-only --repeats {repeats}`: forward + PIT SI-SNR +"
        f" backward + Adam on a batch of {BATCH} x {SEGMENT_S:g} s, the training configurations"
        f" of part 2; median process-CPU time of {repeats} steps (load average {load:.1f}).",
        "",
        "| model | CPU s per step | steps per CPU minute |",
        "|---|---|---|",
        *rows,
        "",
        "Top operators by self CPU time in one profiled step (`torch.profiler`; share of the"
        " step, number of calls):",
        "",
        *details,
    ]


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 CPU-minute budgets, 10 s only")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("data/espeak8k"),
        help="espeak-ng corpus (python -m ssmkit.audio.espeak_corpus DIR); default data/espeak8k",
    )
    parser.add_argument("--runs", type=Path, default=None, help="checkpoints (default: temp)")
    parser.add_argument("--budget-min", type=float, default=12.0, help="CPU minutes per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="cuda: --train-one / --speed-only on a GPU (budgets in wall time)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="training runs at a time (default: one per core)")  # fmt: skip
    parser.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell-timeout", type=float, default=1800.0, help="s per speed cell")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true",
                        help="only part 3; replaces that section of the results file")  # fmt: skip
    parser.add_argument("--profile-only", action="store_true", help="only part 4 (step cost)")
    parser.add_argument("--profile-one", help=argparse.SUPPRESS)
    parser.add_argument("--train-one", help=argparse.SUPPRESS)
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)
    parser.add_argument("--eval-one", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help="held-out mixtures (0 = all)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate existing --runs")
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_one:
        train_one(args.train_one, args.corpus, args.budget_min * 60, args.runs, args.seed,
                  device=args.device)  # fmt: skip
        return
    if args.eval_one:
        eval_one(args.eval_one, args.runs, args.corpus, args.limit or None)
        return
    if args.eval_only:
        training_table(args.runs, args.corpus, args.limit or None)
        return
    if args.measure_one:
        print(json.dumps(measure_one(args.measure_one, args.seconds, args.repeats, args.device)))
        return
    if args.profile_one:
        print(json.dumps(profile_one(args.profile_one, args.repeats)))
        return
    if args.quick:
        args.budget_min, args.lengths, args.repeats = 1.0, [10.0], 1
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("separation_quick.md" if args.quick else "separation.md")
    if args.speed_only:
        section = speed_section(args.lengths, args.repeats, args.cell_timeout, args.device)
        print("\n".join(section))
        replace_section(out, "3b." if args.device != "cpu" else "3. Inference", section)
        return
    if args.profile_only:
        section = profile_section(args.repeats)
        print("\n".join(section))
        replace_section(out, "4. Cost", section)
        return
    if not (args.corpus / "train").is_dir():
        raise SystemExit(
            f"no corpus at {args.corpus}; make one with "
            f"`python -m ssmkit.audio.espeak_corpus {args.corpus}` (installs espeak-ng)"
        )
    runs = args.runs or Path(f"/tmp/ssmkit_separation_{int(args.budget_min * 60)}s")
    check = metric_check()
    print("\n".join(check), flush=True)
    start = time.time()
    train_all(args.corpus, args.budget_min * 60, runs, args.seed, args.jobs)
    train_wall = time.time() - start
    train = training_table(runs, args.corpus, 20 if args.quick else (args.limit or None))
    load = os.getloadavg()
    lines = [
        "# Speech separation benchmark",
        "",
        f"`ssmkit bench separation{' --quick' if args.quick else ''} --budget-min {args.budget_min:g}`"
        f" (CPU only, {os.cpu_count()} cores shared with other jobs; torch {torch.__version__}).",
        "",
        "## 1. Metric check: published outputs on the 5 Echo2Mix demo mixtures (16 kHz)",
        "",
        "| system | PIT SI-SNRi (dB) | expected | SDRi (dB) |",
        "|---|---|---|---|",
        *check,
        "",
        "## 2. Equal CPU budget on the espeak-ng corpus (8 kHz)",
        "",
        f"Each model trained for {args.budget_min:g} CPU-minutes on one thread (process CPU time;"
        f" {args.jobs} at a time, {train_wall / 60:.0f} min wall, load average at the end"
        f" {load[0]:.1f}), {recipe()}, dynamic mixing of the espeak-ng training speakers (gains"
        " +-2.5 dB). Held-out: fixed mixtures of unseen speakers. Echo2Mix: the 5 real"
        " reverberant demo mixtures resampled to 8 kHz (out of domain).",
        "",
        "| model | params (M) | CPU min | steps | final train SI-SNR (dB) | held-out SI-SNRi / SDRi "
        "(dB) | Echo2Mix SI-SNRi / SDRi (dB) |",
        "|---|---|---|---|---|---|---|",
        *train,
        "",
    ]
    if not args.skip_speed:
        lines += speed_section(args.lengths, args.repeats, args.cell_timeout)
        lines += ["", *profile_section(args.repeats)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(out, text)


if __name__ == "__main__":
    main()
