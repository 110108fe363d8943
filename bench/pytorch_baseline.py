#!/usr/bin/env python3
"""PyTorch side of vestige's CPU training-speed benchmark (the Rust side is `vestige bench`).

Models are GPT-NeoX / Pythia shaped: LayerNorm, parallel residual, partial rotary
(rotary_pct 0.25, base 10000), biases everywhere, untied LM head, exact (erf) GELU; fp32 on
CPU with ``torch.set_num_threads(--threads)``.

Configs::

    main: vocab 512, d_model 256, 4 layers, 4 heads, intermediate 1024, seq 128, batch 16
    tiny: vocab 512, d_model  64, 2 layers, 4 heads, intermediate  256, seq  64, batch 32

Modes::

    train: full training step (forward, backward, AdamW lr 1e-3) on random tokens, LM loss
    soft:  all model weights frozen (requires_grad False); a 16-vector soft prompt is
           prepended to the token embeddings (16 + seq positions) and trained with AdamW
           lr 1e-3; the loss covers the real tokens only, and tokens/s counts B*seq.

Implementations (``--impl``)::

    plain (default): a compact nanoGPT-style module, F.scaled_dot_product_attention(is_causal=True)
    hf:              transformers.GPTNeoXForCausalLM with attn_implementation="sdpa"

Output: one JSON line
``{"impl","config","mode","compile","threads","tokens_per_s","step_ms","peak_rss_mb", ...}``
where ``step_ms`` is the *median* timed step (``tokens_per_s`` = batch*seq / median step);
``step_ms_mean``, ``step_ms_min`` and ``cpu_util`` (process CPU time / (wall * threads);
well below 1 means the CPU was shared with something else) are extra fields.
``--all`` runs every (config, mode) for eager and ``--compile``, each in a fresh subprocess
(so peak RSS is per run), and prints a markdown table; a row whose ``cpu_util`` is below 0.9
is re-run (``--retries``, default 2) and the least contended attempt is kept. ``--verify`` checks that the plain
module computes the same logits as GPTNeoXForCausalLM given the same weights.

Examples::

    python3 bench/pytorch_baseline.py --config main --mode train
    python3 bench/pytorch_baseline.py --config tiny --mode soft --compile --threads 4
    python3 bench/pytorch_baseline.py --all --impl plain
    python3 bench/pytorch_baseline.py --verify
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Config:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    intermediate: int
    seq: int
    batch: int
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    ln_eps: float = 1e-5


CONFIGS = {
    "main": Config(vocab=512, d_model=256, n_layers=4, n_heads=4, intermediate=1024, seq=128, batch=16),
    "tiny": Config(vocab=512, d_model=64, n_layers=2, n_heads=4, intermediate=256, seq=64, batch=32),
}
N_SOFT = 16
LR = 1e-3
CLEAN_CPU_UTIL = 0.9  # --all retries runs below this (the CPU was shared with other work)


# ------------------------------------------------------------------------------------------
# Plain implementation (weight layout identical to GPTNeoX, so --verify can copy weights)
# ------------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_heads = c.n_heads
        self.head_dim = c.d_model // c.n_heads
        self.rot = int(self.head_dim * c.rotary_pct)
        # GPT-NeoX layout: output features are [head][q|k|v][head_dim].
        self.query_key_value = nn.Linear(c.d_model, 3 * c.d_model)
        self.dense = nn.Linear(c.d_model, c.d_model)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.query_key_value(x).view(B, T, self.n_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        r = self.rot
        q = torch.cat((q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]), dim=-1)
        k = torch.cat((k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]), dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.dense(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(c.d_model, c.intermediate)
        self.dense_4h_to_h = nn.Linear(c.intermediate, c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.post_attention_layernorm = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.attention = Attention(c)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        # Parallel residual: x + attn(ln1(x)) + mlp(ln2(x)).
        return x + self.attention(self.input_layernorm(x), cos, sin) + self.mlp(self.post_attention_layernorm(x))


class PlainNeoX(nn.Module):
    def __init__(self, c: Config, max_len: int):
        super().__init__()
        self.embed_in = nn.Embedding(c.vocab, c.d_model)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.final_layer_norm = nn.LayerNorm(c.d_model, eps=c.ln_eps)
        self.embed_out = nn.Linear(c.d_model, c.vocab, bias=False)
        rot = int(c.d_model // c.n_heads * c.rotary_pct)
        inv_freq = 1.0 / (c.rotary_base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
        freqs = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_in

    def forward(self, input_ids=None, inputs_embeds=None) -> torch.Tensor:
        x = self.embed_in(input_ids) if inputs_embeds is None else inputs_embeds
        T = x.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.embed_out(self.final_layer_norm(x))


# ------------------------------------------------------------------------------------------
# HF implementation
# ------------------------------------------------------------------------------------------


def hf_config(c: Config, max_len: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=c.vocab,
        hidden_size=c.d_model,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        intermediate_size=c.intermediate,
        hidden_act="gelu",
        rotary_pct=c.rotary_pct,
        rotary_emb_base=c.rotary_base,
        max_position_embeddings=max(max_len, 2048),
        layer_norm_eps=c.ln_eps,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        use_cache=False,
    )


class HFWrapper(nn.Module):
    """GPTNeoXForCausalLM behind the same call signature as PlainNeoX (returns logits)."""

    def __init__(self, c: Config, max_len: int, attn: str = "sdpa"):
        super().__init__()
        from transformers import GPTNeoXForCausalLM

        self.model = GPTNeoXForCausalLM._from_config(hf_config(c, max_len), attn_implementation=attn)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, inputs_embeds=None) -> torch.Tensor:
        return self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, use_cache=False).logits


# ------------------------------------------------------------------------------------------
# Benchmark
# ------------------------------------------------------------------------------------------


def build(impl: str, c: Config, max_len: int) -> nn.Module:
    if impl == "plain":
        return PlainNeoX(c, max_len)
    if impl == "hf":
        return HFWrapper(c, max_len)
    raise ValueError(impl)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def bench(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = CONFIGS[args.config]
    soft = args.mode == "soft"
    max_len = c.seq + (N_SOFT if soft else 0)
    model = build(args.impl, c, max_len)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    if soft:
        for p in model.parameters():
            p.requires_grad_(False)
        soft_prompt = nn.Parameter(0.02 * torch.randn(N_SOFT, c.d_model))
        opt = torch.optim.AdamW([soft_prompt], lr=LR)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=LR)

    fwd = torch.compile(model) if args.compile else model
    embed = model.get_input_embeddings()

    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, c.vocab, (c.batch, c.seq), generator=gen) for _ in range(4)]

    def step(i: int) -> float:
        ids = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        if soft:
            x = torch.cat([soft_prompt.unsqueeze(0).expand(c.batch, -1, -1), embed(ids)], dim=1)
            logits = fwd(inputs_embeds=x)[:, N_SOFT:]
        else:
            logits = fwd(input_ids=ids)
        loss = lm_loss(logits, ids)
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    warmup_s = time.perf_counter() - t0

    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(args.steps):
        t = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert math.isfinite(loss)

    # The median step is robust to transient contention on a shared machine; the mean and
    # cpu_util (process CPU time / (wall time * threads); well below 1 => CPU was contended)
    # are reported alongside.
    med = statistics.median(times)
    return {
        "impl": args.impl,
        "config": args.config,
        "mode": args.mode,
        "compile": bool(args.compile),
        "threads": args.threads,
        "tokens_per_s": round(c.batch * c.seq / med, 1),
        "step_ms": round(1000 * med, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "step_ms_mean": round(1000 * wall / args.steps, 2),
        "step_ms_min": round(1000 * min(times), 2),
        "cpu_util": round(cpu / (wall * args.threads), 2),
        "steps": args.steps,
        "warmup_s": round(warmup_s, 2),
        "params": n_params,
        "final_loss": round(loss, 4),
        "torch": torch.__version__,
    }


def run_all(args) -> None:
    rows = []
    for compile_ in (False, True):
        for config in ("main", "tiny"):
            for mode in ("train", "soft"):
                cmd = [
                    sys.executable, __file__, "--config", config, "--mode", mode, "--impl", args.impl,
                    "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
                ]
                if compile_:
                    cmd.append("--compile")
                best = None
                for attempt in range(1 + args.retries):
                    print("running:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
                    try:
                        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
                        if p.returncode != 0 or not lines:
                            err = (p.stderr.strip().splitlines() or ["?"])[-1]
                            raise RuntimeError(f"exit {p.returncode}: {err}")
                        r = json.loads(lines[-1])
                        r["attempt"] = attempt + 1
                        print(json.dumps(r), flush=True)
                    except (subprocess.TimeoutExpired, RuntimeError) as e:
                        r = {"impl": args.impl, "config": config, "mode": mode, "compile": compile_,
                             "threads": args.threads, "error": str(e)[:120]}
                        print(json.dumps(r), flush=True)
                        best = best or r
                        break
                    # Keep the least contended attempt (highest cpu_util), not the fastest.
                    if best is None or "error" in best or r["cpu_util"] > best["cpu_util"]:
                        best = r
                    if r["cpu_util"] >= CLEAN_CPU_UTIL:
                        break
                if "error" not in best:
                    best["tries"] = attempt + 1  # runs made for this row (the kept one is "attempt")
                rows.append(best)

    print()
    print(f"PyTorch {torch.__version__}, impl={args.impl}, threads={args.threads}, steps={args.steps}")
    print()
    print("| impl | config | mode | compile | threads | tokens/s | step ms (median) | mean ms | cpu util | tries | peak RSS MB |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['impl']} | {r['config']} | {r['mode']} | {r['compile']} | {r['threads']} | "
                  f"error: {r['error']} | | | | | |")
        else:
            print(f"| {r['impl']} | {r['config']} | {r['mode']} | {r['compile']} | {r['threads']} | "
                  f"{r['tokens_per_s']:.0f} | {r['step_ms']:.1f} | {r['step_ms_mean']:.1f} | {r['cpu_util']:.2f} | "
                  f"{r['tries']} | {r['peak_rss_mb']:.0f} |")


def verify() -> None:
    """The plain module and GPTNeoXForCausalLM (eager and sdpa) agree given the same weights."""
    torch.manual_seed(0)
    c = Config(vocab=64, d_model=32, n_layers=2, n_heads=4, intermediate=80, seq=12, batch=2)
    plain = PlainNeoX(c, 64).double()
    for p in plain.parameters():  # non-trivial weights everywhere
        nn.init.normal_(p, mean=1.0 if p.ndim == 1 else 0.0, std=0.2)
    for attn in ("eager", "sdpa"):
        hf = HFWrapper(c, 64, attn=attn).double()
        sd = {k.removeprefix("gpt_neox."): v for k, v in hf.model.state_dict().items()}
        sd = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in sd.items()}
        missing = set(sd) - set(plain.state_dict())
        assert not missing, missing
        hf.model.load_state_dict(
            {("lm_head.weight" if k == "embed_out.weight" else f"gpt_neox.{k}"): v
             for k, v in plain.state_dict().items()},
            strict=True,
        )
        ids = torch.randint(0, c.vocab, (c.batch, c.seq))
        with torch.no_grad():
            d = (plain(input_ids=ids) - hf(input_ids=ids)).abs().max().item()
            x = torch.randn(c.batch, c.seq + 3, c.d_model, dtype=torch.float64)
            d2 = (plain(inputs_embeds=x) - hf(inputs_embeds=x)).abs().max().item()
        print(f"plain vs GPTNeoXForCausalLM[{attn}]: max |logits diff| = {d:.2e} (ids), {d2:.2e} (embeds)")
        assert d < 1e-6 and d2 < 1e-6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="main")
    ap.add_argument("--mode", choices=("train", "soft"), default="train")
    ap.add_argument("--impl", choices=("plain", "hf"), default="plain")
    ap.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (includes compilation)")
    ap.add_argument("--all", action="store_true", help="every config x mode, eager and compiled")
    ap.add_argument("--retries", type=int, default=2,
                    help="--all: re-run a row up to this many times while cpu_util < 0.9")
    ap.add_argument("--timeout", type=float, default=1800, help="per-run timeout for --all (s)")
    ap.add_argument("--verify", action="store_true", help="check plain == GPTNeoXForCausalLM numerically")
    args = ap.parse_args()

    if args.verify:
        verify()
    elif args.all:
        run_all(args)
    else:
        print(json.dumps(bench(args)), flush=True)


if __name__ == "__main__":
    main()
