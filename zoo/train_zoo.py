#!/usr/bin/env python
"""Train and derive the reference zoo: tiny LLaMA-style LMs with known lineage.

    python zoo/train_zoo.py --out zoo            # build everything missing, then labels
    python zoo/train_zoo.py --out zoo --only a0  # one model (its parents must exist)
    python zoo/train_zoo.py --out zoo --labels-only

Everything is a pure function of the seeds in PLAN (given the Python stdlib of the machine,
recorded in labels.json). Models whose ``model.safetensors`` + ``meta.json`` exist are skipped,
so an interrupted build resumes. Derived models always start from their parent's *saved
float16* weights, so resuming gives the same result as an uninterrupted run.

Needs torch (training only; the ``audit`` package never imports this directory).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from disguise_zoo import DISGUISE_PLAN, apply_plan, disguises_of  # noqa: E402
from zoo_data import ByteTokenizer, Corpus, Sampler, fixed_batch  # noqa: E402
from zoo_model import CausalLM, ModelConfig, n_params  # noqa: E402

# --------------------------------------------------------------------------------------------
# Recipe and plan
# --------------------------------------------------------------------------------------------

SEQ_LEN = 128
BATCH = 16
BASE_STEPS = 1200          # steps of every independently trained model
BASE_LR = 3e-3
WEIGHT_DECAY = 0.1
HELDOUT_SEQS = 32          # fixed held-out batch per shard: 32 x 128 tokens
HELDOUT_SEED = 1234
FUNC_SEED = 4321           # fixed batch (shard0 held-out) for function-preservation checks
FUNC_SEQS = 8

ARCH = {  # name: (layers, hidden, mlp, heads, kv_heads)
    "d4h64": (4, 64, 176, 4, 4),
    "d6h64": (6, 64, 176, 4, 4),
    "d4h96": (4, 96, 256, 6, 6),
    "d4h64m128": (4, 64, 128, 4, 4),
    "d4h128": (4, 128, 352, 4, 4),
    "d4h64gqa": (4, 64, 176, 4, 2),
}


def root(name, arch, shard, init_seed, data_seed, note=""):
    return dict(name=name, arch=arch, shard=shard, init_seed=init_seed, data_seed=data_seed,
                parent=None, derivation=None, params={}, note=note)


def derived(name, parent, derivation, **params):
    return dict(name=name, parent=parent, derivation=derivation, params=params)


PLAN = [
    # ---- independent population (21 roots) ----
    # family a: d4h64 on shard0; a4, a5 are hard negatives of a0 (same data order, new init)
    root("a0", "d4h64", 0, 1, 101),
    root("a1", "d4h64", 0, 2, 102),
    root("a2", "d4h64", 0, 3, 103),
    root("a3", "d4h64", 0, 4, 104),
    root("a4", "d4h64", 0, 5, 101, "hard negative of a0: same data order, different init"),
    root("a5", "d4h64", 0, 6, 101, "hard negative of a0: same data order, different init"),
    # family b: d4h64 on shard1; b4 is a hard negative of b0
    root("b0", "d4h64", 1, 11, 111),
    root("b1", "d4h64", 1, 12, 112),
    root("b2", "d4h64", 1, 13, 113),
    root("b3", "d4h64", 1, 14, 114),
    root("b4", "d4h64", 1, 15, 111, "hard negative of b0: same data order, different init"),
    # family c: 6 layers; c1 is a hard negative of c0
    root("c0", "d6h64", 0, 21, 121),
    root("c1", "d6h64", 0, 22, 121, "hard negative of c0: same data order, different init"),
    root("c2", "d6h64", 1, 23, 123),
    root("c3", "d6h64", 1, 24, 124),
    # family w: other widths
    root("w0", "d4h96", 0, 31, 131),
    root("w1", "d4h96", 1, 32, 132),
    root("w2", "d4h64m128", 0, 33, 133),
    root("w3", "d4h128", 1, 34, 134),
    # family g: grouped-query attention (4 query heads, 2 kv heads)
    root("g0", "d4h64gqa", 0, 41, 141),
    root("g1", "d4h64gqa", 1, 42, 142),
    # ---- first-generation derivations (each from a different parent) ----
    derived("a0-cpt-light", "a0", "continued-pretrain-light", shard=1, frac=0.15, lr=1e-3,
            data_seed=201),
    derived("a1-cpt-heavy", "a1", "continued-pretrain-heavy", shard=1, frac=1.0, lr=1e-3,
            data_seed=202),
    derived("b0-ft-narrow", "b0", "narrow-finetune", package="email", frac=0.1, lr=5e-4,
            data_seed=203),
    derived("c0-lora", "c0", "lora-merged", shard=1, frac=0.2, lr=2e-3, rank=8, alpha=16,
            targets=["q_proj", "v_proj", "up_proj"], data_seed=204, seed=304),
    derived("c2-prune-heal", "c2", "layer-prune-heal", drop=[3, 4], shard=1, frac=0.15, lr=1e-3,
            data_seed=205),
    derived("b1-moe", "b1", "moe-upcycle", n_experts=4, top_k=2, noise=0.1, shard=1, frac=0.2,
            lr=1e-3, data_seed=206, seed=306),
    derived("a2-perm-ft", "a2", "permute-heads-mlp-finetune", shard=0, frac=0.1, lr=5e-4,
            data_seed=207, seed=307),
    derived("g1-perm-ft", "g1", "permute-heads-mlp-finetune", shard=1, frac=0.1, lr=5e-4,
            data_seed=208, seed=308),
    derived("w0-resid-perm", "w0", "residual-permutation", seed=309),
    derived("g0-rescale", "g0", "attention-rescale", seed=310, log2_range=[-2.0, 2.0]),
    derived("a3-int8", "a3", "int8-roundtrip"),
    # ---- second generation ----
    derived("a1-cpt-heavy-ft-narrow", "a1-cpt-heavy", "narrow-finetune", package="asyncio",
            frac=0.1, lr=5e-4, data_seed=211),
    derived("a1-cpt-heavy-int8", "a1-cpt-heavy", "int8-roundtrip"),
    derived("c0-lora-rescale", "c0-lora", "attention-rescale", seed=312, log2_range=[-2.0, 2.0]),
    derived("c2-prune-heal-resid-perm", "c2-prune-heal", "residual-permutation", seed=313),
    # ---- disguised copies (zoo/disguise_zoo.py) ----
    *DISGUISE_PLAN,
]

FUNCTION_PRESERVING = {"residual-permutation", "attention-rescale"}

# --------------------------------------------------------------------------------------------
# Utilities
# --------------------------------------------------------------------------------------------

LOG = None


def log(msg: str) -> None:
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    if LOG is not None:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def setup_determinism(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def arch_config(arch: str, vocab: int) -> ModelConfig:
    L, d, m, h, kv = ARCH[arch]
    return ModelConfig(vocab_size=vocab, hidden_size=d, intermediate_size=m, num_hidden_layers=L,
                       num_attention_heads=h, num_key_value_heads=kv,
                       max_position_embeddings=SEQ_LEN)


def save_model(model: CausalLM, out: Path, tok: ByteTokenizer, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(model.cfg.hf_config(), indent=2) + "\n")
    tok.write(out / "tokenizer.json")
    meta["n_params"] = n_params(model)
    meta["size_bytes"] = (out / "model.safetensors").stat().st_size
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")  # written last: "done"


def load_model(path: Path) -> CausalLM:
    cfg = ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
    cfg.max_position_embeddings = SEQ_LEN
    model = CausalLM(cfg)
    sd = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model


def is_done(path: Path) -> bool:
    return (path / "model.safetensors").exists() and (path / "meta.json").exists()


@torch.no_grad()
def eval_loss(model: CausalLM, batch: np.ndarray) -> float:
    model.eval()
    return float(model.loss(torch.from_numpy(batch)))


@torch.no_grad()
def max_logit_diff(a: CausalLM, b: CausalLM, batch: np.ndarray) -> float:
    x = torch.from_numpy(batch[:, :-1])
    a.eval(), b.eval()
    return float((a(x) - b(x)).abs().max())


def fp16_roundtrip(model: CausalLM) -> CausalLM:
    """The model exactly as it will be saved (float16), back in float32."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


def train(model: CausalLM, tokens: np.ndarray, steps: int, lr: float, data_seed: int,
          params=None, tag: str = "") -> dict:
    """AdamW (0.9, 0.95), weight decay on matrices only, linear warmup + cosine to lr/10,
    grad-norm clip 1.0. Returns the loss record."""
    model.train()
    sampler = Sampler(tokens, SEQ_LEN, BATCH, data_seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        named = [(n, p) for n, p in named if n in params]
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, min(100, steps // 10))

    def lr_at(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        t = (s - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    losses, t0 = [], time.time()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        loss = model.loss(torch.from_numpy(sampler.next()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        losses.append(float(loss))
        if s % 100 == 0 or s == steps - 1:
            log(f"  {tag} step {s:5d}/{steps} loss {losses[-1]:.4f} "
                f"({(time.time() - t0) / (s + 1) * 1000:.0f} ms/step)")
    tail = losses[-50:]
    return {
        "initial_loss": losses[0],
        "final_train_loss": float(np.mean(tail)),
        "loss_curve": {str(i): round(float(np.mean(losses[i:i + 10])), 4)
                       for i in range(0, steps, max(10, steps // 12))},
        "train_seconds": round(time.time() - t0, 1),
    }


# --------------------------------------------------------------------------------------------
# Derivations
# --------------------------------------------------------------------------------------------


def prune_layers(parent: CausalLM, drop: list[int]) -> CausalLM:
    cfg = ModelConfig(**{**parent.cfg.to_dict(),
                         "num_hidden_layers": parent.cfg.num_hidden_layers - len(drop)})
    child = CausalLM(cfg)
    keep = [i for i in range(parent.cfg.num_hidden_layers) if i not in drop]
    psd, csd = parent.state_dict(), {}
    for k in child.state_dict():
        if k.startswith("model.layers."):
            i, rest = k.split(".", 3)[2], k.split(".", 3)[3]
            csd[k] = psd[f"model.layers.{keep[int(i)]}.{rest}"]
        else:
            csd[k] = psd[k]
    child.load_state_dict(csd)
    return child


def upcycle_moe(parent: CausalLM, n_experts: int, top_k: int, noise: float,
                gen: torch.Generator) -> CausalLM:
    """Every expert = the dense MLP + Gaussian noise of `noise` x (std of that matrix);
    router N(0, 0.02). Mixtral names: w1 = gate, w3 = up, w2 = down."""
    cfg = ModelConfig(**{**parent.cfg.to_dict(), "num_local_experts": n_experts,
                         "num_experts_per_tok": top_k})
    child = CausalLM(cfg)
    psd, csd = parent.state_dict(), {}
    names = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
    for k, v in child.state_dict().items():
        if ".block_sparse_moe.gate." in k:
            csd[k] = torch.randn(v.shape, generator=gen) * 0.02
        elif ".block_sparse_moe.experts." in k:
            pre, rest = k.split(".block_sparse_moe.experts.")
            w = psd[f"{pre}.mlp.{names[rest.split('.')[1]]}.weight"]
            csd[k] = w + torch.randn(w.shape, generator=gen) * noise * w.std()
        else:
            csd[k] = psd[k]
    child.load_state_dict(csd)
    return child


@torch.no_grad()
def permute_heads_and_mlp(model: CausalLM, gen: torch.Generator) -> dict:
    """Per layer: a random permutation of MLP hidden units (gate/up rows, down columns) and of
    attention heads (kv groups permuted, query heads permuted within and with their group;
    q/k/v rows by head block, o columns by head block). Exactly function-preserving."""
    cfg = model.cfg
    hd, H, KV = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    rep = H // KV
    record = []
    for layer in model.model.layers:
        m = layer.mlp
        p = torch.randperm(cfg.intermediate_size, generator=gen)
        m.gate_proj.weight.copy_(m.gate_proj.weight[p])
        m.up_proj.weight.copy_(m.up_proj.weight[p])
        m.down_proj.weight.copy_(m.down_proj.weight[:, p])
        kv_perm = torch.randperm(KV, generator=gen)
        q_heads = torch.cat([kv_perm[j] * rep + torch.randperm(rep, generator=gen)
                             for j in range(KV)])

        def rows(heads):
            return torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads.tolist()])

        a = layer.self_attn
        qr, kvr = rows(q_heads), rows(kv_perm)
        a.q_proj.weight.copy_(a.q_proj.weight[qr])
        a.k_proj.weight.copy_(a.k_proj.weight[kvr])
        a.v_proj.weight.copy_(a.v_proj.weight[kvr])
        a.o_proj.weight.copy_(a.o_proj.weight[:, qr])
        record.append({"q_heads": q_heads.tolist(), "kv_heads": kv_perm.tolist()})
    return {"head_permutations": record}


@torch.no_grad()
def permute_residual(model: CausalLM, gen: torch.Generator) -> list[int]:
    """One permutation P of the hidden (residual) dimension applied everywhere: embedding
    columns, the input dim of every q/k/v/gate/up/router/lm_head, the output dim of o/down,
    every norm gain. RMSNorm is permutation-equivariant, so the function is unchanged."""
    P = torch.randperm(model.cfg.hidden_size, generator=gen)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(p[P])
        elif name == "model.embed_tokens.weight":
            p.copy_(p[:, P])
        elif name.endswith(("o_proj.weight", "down_proj.weight", ".w2.weight")):
            p.copy_(p[P, :])
        else:  # q, k, v, gate, up, w1, w3, router gate, lm_head: input dim is hidden
            p.copy_(p[:, P])
    return P.tolist()


@torch.no_grad()
def rescale_attention(model: CausalLM, gen: torch.Generator, lo: float, hi: float) -> dict:
    """Per layer: q *= c, k /= c, v *= c2, o /= c2 with log2 c, log2 c2 ~ U(lo, hi).
    q.k is unchanged (RoPE is linear), and o(v x) is unchanged."""
    cs, c2s = [], []
    for layer in model.model.layers:
        c, c2 = (2.0 ** (lo + (hi - lo) * torch.rand(2, generator=gen, dtype=torch.float64))).tolist()
        a = layer.self_attn
        a.q_proj.weight.mul_(c)
        a.k_proj.weight.div_(c)
        a.v_proj.weight.mul_(c2)
        a.o_proj.weight.div_(c2)
        cs.append(c), c2s.append(c2)
    return {"c_qk": cs, "c_vo": c2s}


@torch.no_grad()
def int8_roundtrip(model: CausalLM) -> None:
    """Per-output-channel (per row) absmax int8 quantisation of every matrix (embedding rows
    are per token), dequantised back; norm gains untouched."""
    for name, p in model.named_parameters():
        if p.ndim == 2:
            scale = p.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            p.copy_(torch.clamp(torch.round(p / scale), -127, 127) * scale)


def train_lora_merged(model: CausalLM, tokens: np.ndarray, steps: int, lr: float, data_seed: int,
                      rank: int, alpha: float, targets: list[str], gen: torch.Generator,
                      tag: str) -> dict:
    """LoRA on the target linears (A ~ N(0, 1/rank), B = 0; base weights frozen), trained,
    then merged: W += (alpha / rank) B A."""
    from torch import nn

    class LoRALinear(nn.Module):
        def __init__(self, base: nn.Linear):
            super().__init__()
            self.base = base
            self.A = nn.Parameter(torch.randn(rank, base.in_features, generator=gen) / rank)
            self.B = nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x):
            return self.base(x) + (alpha / rank) * (x @ self.A.t() @ self.B.t())

    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for layer in model.model.layers:
        for mod in (layer.self_attn, layer.mlp):
            for t in targets:
                if hasattr(mod, t):
                    lora = LoRALinear(getattr(mod, t))
                    setattr(mod, t, lora)
                    wrapped.append((mod, t, lora))
    rec = train(model, tokens, steps, lr, data_seed, tag=tag)
    with torch.no_grad():
        for mod, t, lora in wrapped:
            lora.base.weight.add_((alpha / rank) * lora.B @ lora.A)
            setattr(mod, t, lora.base)
    for p in model.parameters():
        p.requires_grad_(True)
    rec["lora_trainable_params"] = sum(l.A.numel() + l.B.numel() for _, _, l in wrapped)
    return rec


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


class Zoo:
    def __init__(self, out: Path):
        self.out = out
        self.models_dir = out / "models"
        self.corpus = Corpus()
        kept, self.vocab_stats = self.corpus.build_vocab()
        self.tok = ByteTokenizer(kept)
        self.tokens = {k: self.tok.encode(v.stream()) for k, v in self.corpus.sets.items()}
        self.heldout = {s: fixed_batch(self.tokens[f"shard{s}-heldout"], SEQ_LEN, HELDOUT_SEQS,
                                       HELDOUT_SEED + s) for s in (0, 1)}
        self.func_batch = fixed_batch(self.tokens["shard0-heldout"], SEQ_LEN, FUNC_SEQS,
                                      FUNC_SEED)
        self.spec = {s["name"]: s for s in PLAN}

    def path(self, name: str) -> Path:
        return self.models_dir / name

    def meta(self, name: str) -> dict:
        return json.loads((self.path(name) / "meta.json").read_text())

    def root_of(self, name: str) -> str:
        while self.spec[name]["parent"]:
            name = self.spec[name]["parent"]
        return name

    def heldout_losses(self, model: CausalLM) -> dict:
        return {f"shard{s}": eval_loss(model, b) for s, b in self.heldout.items()}

    def common_meta(self, model: CausalLM, spec: dict) -> dict:
        c = model.cfg
        return {
            "depth": c.num_hidden_layers, "hidden": c.hidden_size, "mlp": c.intermediate_size,
            "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads,
            "head_dim": c.head_dim, "vocab_size": c.vocab_size,
            "num_local_experts": c.num_local_experts or None,
            "architecture": c.hf_config()["architectures"][0],
            "seq_len": SEQ_LEN, "parent": spec["parent"], "derivation": spec["derivation"],
            "root": self.root_of(spec["name"]), "torch_threads": torch.get_num_threads(),
        }

    def build_root(self, spec: dict) -> None:
        name = spec["name"]
        cfg = arch_config(spec["arch"], self.tok.vocab_size)
        torch.manual_seed(spec["init_seed"])
        model = CausalLM(cfg)
        model.init_weights(torch.Generator().manual_seed(spec["init_seed"]))
        emb0 = model.model.embed_tokens.weight.detach().clone()
        steps = BASE_STEPS
        rec = train(model, self.tokens[f"shard{spec['shard']}"], steps, BASE_LR,
                    spec["data_seed"], tag=name)
        fp16_roundtrip(model)
        # untrained rows would keep their init direction (cosine ~1); record the worst row
        cos0 = torch.nn.functional.cosine_similarity(model.model.embed_tokens.weight.detach(),
                                                     emb0, dim=1)
        held = self.heldout_losses(model)
        meta = {
            **self.common_meta(model, spec), "init_seed": spec["init_seed"],
            "data_seed": spec["data_seed"], "shard": f"shard{spec['shard']}",
            "recipe": spec["arch"], "steps": steps, "lr": BASE_LR, "batch": BATCH,
            **rec, "heldout_loss": held[f"shard{spec['shard']}"],
            "heldout_shard": f"shard{spec['shard']}", "heldout_loss_by_shard": held,
            "derivation_params": {}, "function_max_logit_diff": None, "generation": 0,
            "embed_row_max_cosine_to_init": float(cos0.max()),
            "embed_row_mean_cosine_to_init": float(cos0.mean()),
            "note": spec.get("note", ""),
        }
        save_model(model, self.path(name), self.tok, meta)

    def build_derived(self, spec: dict) -> None:
        name, parent_name, kind, p = spec["name"], spec["parent"], spec["derivation"], spec["params"]
        parent = load_model(self.path(parent_name))
        pmeta = self.meta(parent_name)
        model = load_model(self.path(parent_name))
        gen = torch.Generator().manual_seed(p.get("seed", 0))
        torch.manual_seed(p.get("seed", 0))
        dparams = {k: v for k, v in p.items()}
        rec: dict = {"initial_loss": None, "final_train_loss": None, "train_seconds": 0.0}
        steps = int(round(p.get("frac", 0) * BASE_STEPS))
        shard = pmeta["shard"]
        tokens = None
        if "package" in p:
            fs = self.corpus.narrow(p["package"])
            tokens, shard = self.tok.encode(fs.stream()), fs.name
            dparams["fileset"] = fs.summary()
        elif "shard" in p:
            shard = f"shard{p['shard']}"
            tokens = self.tokens[shard]

        if kind in ("continued-pretrain-light", "continued-pretrain-heavy", "narrow-finetune"):
            rec = train(model, tokens, steps, p["lr"], p["data_seed"], tag=name)
        elif kind == "lora-merged":
            rec = train_lora_merged(model, tokens, steps, p["lr"], p["data_seed"], p["rank"],
                                    p["alpha"], p["targets"], gen, tag=name)
        elif kind == "layer-prune-heal":
            model = prune_layers(model, p["drop"])
            dparams["loss_after_prune_before_heal"] = self.heldout_losses(model)
            rec = train(model, tokens, steps, p["lr"], p["data_seed"], tag=name)
        elif kind == "moe-upcycle":
            model = upcycle_moe(model, p["n_experts"], p["top_k"], p["noise"], gen)
            dparams["logit_diff_after_upcycle_before_training"] = max_logit_diff(
                parent, fp16_roundtrip(model), self.func_batch)
            rec = train(model, tokens, steps, p["lr"], p["data_seed"], tag=name)
        elif kind == "permute-heads-mlp-finetune":
            dparams.update(permute_heads_and_mlp(model, gen))
            # proof of function preservation of the permutation itself (before the fine-tune),
            # in float32 from float16 weights (permuting float16 values is exact)
            dparams["pre_finetune_max_logit_diff"] = max_logit_diff(
                parent, fp16_roundtrip(model), self.func_batch)
            rec = train(model, tokens, steps, p["lr"], p["data_seed"], tag=name)
        elif kind == "residual-permutation":
            dparams["residual_permutation"] = permute_residual(model, gen)
        elif kind == "attention-rescale":
            dparams.update(rescale_attention(model, gen, *p["log2_range"]))
        elif kind == "int8-roundtrip":
            int8_roundtrip(model)
        elif kind.startswith("disguise:"):
            model = self.disguise(model, parent, p, dparams)
            if steps:
                dparams["pre_finetune_max_logit_diff"] = max_logit_diff(parent, model, self.func_batch)
                rec = train(model, tokens, steps, p["lr"], p["data_seed"], tag=name)
        else:
            raise ValueError(kind)

        preserving = kind in FUNCTION_PRESERVING or (
            kind.startswith("disguise:") and not steps and not {"drop-layers", "duplicate-layers"} & set(p["steps"]))
        if preserving:
            # the transformation itself, before the child is rounded to float16 for saving
            dparams["max_logit_diff_before_fp16_rounding"] = max_logit_diff(
                parent, model, self.func_batch)
        fp16_roundtrip(model)
        held = self.heldout_losses(model)
        # held-out loss on the shard it was last trained on (the parent's shard for narrow
        # fine-tunes and for derivations without training)
        held_shard = shard if shard in held else pmeta["heldout_shard"]
        meta = {
            **self.common_meta(model, spec), "init_seed": None,
            "data_seed": p.get("data_seed"), "shard": shard, "recipe": pmeta["recipe"],
            "steps": steps, "lr": p.get("lr"), "batch": BATCH if steps else None, **rec,
            "heldout_loss": held[held_shard], "heldout_shard": held_shard,
            "heldout_loss_by_shard": held, "derivation_params": dparams,
            "function_preserving": preserving,
            # max |logit(child) - logit(parent)| on the fixed batch, float32 forward of both
            # saved float16 checkpoints; the proof for the function-preserving derivations
            "function_max_logit_diff": max_logit_diff(parent, model, self.func_batch),
            "parent_max_abs_logit": float(parent(torch.from_numpy(self.func_batch[:, :-1]))
                                          .abs().max()),
            "generation": pmeta["generation"] + 1,
        }
        save_model(model, self.path(name), self.tok, meta)

    def disguise(self, model: CausalLM, parent: CausalLM, p: dict, dparams: dict) -> CausalLM:
        """The numpy disguises of disguise_zoo.py on the parent's float16 weights, back to torch.
        Also checks the numpy forward pass used for the proof against this torch model."""
        tensors = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
        tokens = self.func_batch[:, :-1]
        with torch.no_grad():
            reference = parent(torch.from_numpy(tokens)).double().numpy()
        from audit.testing.forward import logits
        dparams["numpy_forward_vs_torch_max_diff"] = float(max(
            np.abs(logits(tensors, model.cfg.hf_config(), row) - ref).max() for row, ref in zip(tokens, reference)))
        tensors, config, record = apply_plan(tensors, model.cfg.hf_config(), p, tokens)
        dparams.update(record)
        cfg = ModelConfig.from_hf(config)
        cfg.max_position_embeddings = SEQ_LEN
        child = CausalLM(cfg)
        child.load_state_dict({k: torch.from_numpy(v).float() for k, v in tensors.items()}, strict=True)
        return child

    def build(self, only: set[str] | None = None) -> None:
        for spec in PLAN:
            name = spec["name"]
            if only and name not in only:
                continue
            if is_done(self.path(name)):
                log(f"skip {name} (exists)")
                continue
            log(f"build {name} ({spec['derivation'] or 'independent'})")
            t0 = time.time()
            (self.build_derived if spec["parent"] else self.build_root)(spec)
            m = self.meta(name)
            log(f"done {name} in {time.time() - t0:.0f}s: loss {m['initial_loss']} -> "
                f"{m['final_train_loss']}, heldout {m['heldout_loss']:.4f}, "
                f"logit diff vs parent {m['function_max_logit_diff']}")

    # ---------------------------------------------------------------- labels and pairs
    def write_labels(self) -> None:
        models = {}
        for spec in PLAN:
            if is_done(self.path(spec["name"])):
                models[spec["name"]] = {**self.meta(spec["name"]), "disguises": disguises_of(spec)}
        labels = {
            "description": "Reference zoo: tiny LLaMA-style LMs with known lineage. Two models "
                           "are related iff they share a root (independently trained ancestor).",
            "corpus": {**self.corpus.describe(), "tokenizer": {
                "type": "byte-level, restricted vocabulary",
                "kept_bytes": self.tok.kept, "unk_id": self.tok.unk_id,
                "vocab_size": self.tok.vocab_size, "min_count_per_shard": 100,
                **self.vocab_stats}},
            "training": {"seq_len": SEQ_LEN, "batch": BATCH, "base_steps": BASE_STEPS,
                         "base_lr": BASE_LR, "weight_decay": WEIGHT_DECAY,
                         "optimizer": "AdamW(0.9, 0.95), warmup min(100, steps/10), cosine to "
                                      "lr/10, grad clip 1.0, float32 training, float16 saved",
                         "torch_version": torch.__version__,
                         "heldout_batch": f"{HELDOUT_SEQS} x {SEQ_LEN} tokens of shard<k>-heldout, "
                                          f"seed {HELDOUT_SEED}+k",
                         "function_check_batch": f"{FUNC_SEQS} x {SEQ_LEN} tokens of "
                                                 f"shard0-heldout, seed {FUNC_SEED}; float32 "
                                                 "forward from the saved float16 weights"},
            "models": models,
        }
        (self.out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
        (self.out / "pairs.json").write_text(json.dumps(make_pairs(models), indent=1) + "\n")
        log(f"wrote labels for {len(models)} models")


def make_pairs(models: dict) -> list[dict]:
    def ancestors(n):
        out = []
        while models[n]["parent"]:
            n = models[n]["parent"]
            out.append(n)
        return out

    def disguises_between(n, stop):
        """Disguises applied on the way from ``stop`` (an ancestor, or None: the root) to n."""
        out = set()
        while n != stop and n is not None:
            out.update(models[n].get("disguises", []))
            n = models[n]["parent"]
        return out

    pairs = []
    for a, b in itertools.combinations(models, 2):
        ma, mb = models[a], models[b]
        rec = {"a": a, "b": b}
        line_a, line_b = [a, *ancestors(a)], [b, *ancestors(b)]
        common = next((n for n in line_a if n in line_b), None)
        if ma["root"] != mb["root"]:
            hard = (ma["parent"] is None and mb["parent"] is None
                    and ma["recipe"] == mb["recipe"] and ma["shard"] == mb["shard"]
                    and ma["data_seed"] == mb["data_seed"])
            rec.update(label="independent", derivation=None, relation="independent",
                       hard_negative=hard)
        else:
            anc_a, anc_b = ancestors(a), ancestors(b)
            if a in anc_b or b in anc_a:
                older, younger = (a, b) if a in anc_b else (b, a)
                chain, n = [], younger
                while n != older:
                    chain.append(models[n]["derivation"])
                    n = models[n]["parent"]
                relation = {1: "parent-child", 2: "grandparent"}.get(len(chain),
                                                                      f"ancestor-{len(chain)}")
                derivation = " > ".join(reversed(chain))
            elif ma["parent"] == mb["parent"]:
                relation = "siblings"
                derivation = f"{ma['derivation']} | {mb['derivation']}"
            else:
                relation = "related-other"
                derivation = f"{ma['derivation']} | {mb['derivation']}"
            rec.update(label="derived", derivation=derivation, relation=relation,
                       hard_negative=False)
        rec["same_architecture"] = all(ma[k] == mb[k] for k in
                                       ("depth", "hidden", "mlp", "heads", "kv_heads",
                                        "num_local_experts"))
        rec["same_shard"] = ma["shard"] == mb["shard"]
        # function-preserving disguises and depth changes separating the two (for independent
        # pairs: everything applied to either since its root), the benchmark's per-disguise rows
        rec["disguises"] = sorted(disguises_between(a, common) | disguises_between(b, common))
        pairs.append(rec)
    return pairs


def main(argv: list[str] | None = None) -> None:
    global LOG, BASE_STEPS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="zoo", type=Path)
    ap.add_argument("--only", nargs="*", help="build only these models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels-only", action="store_true")
    ap.add_argument("--base-steps", type=int, default=BASE_STEPS,
                    help="steps of the independent models (derived ones scale with it); "
                         "only change for smoke tests")
    args = ap.parse_args(argv)
    BASE_STEPS = args.base_steps
    setup_determinism(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    LOG = args.out / "train.log"
    zoo = Zoo(args.out)
    if not args.labels_only:
        t0 = time.time()
        zoo.build(set(args.only) if args.only else None)
        log(f"build finished in {time.time() - t0:.0f}s")
    zoo.write_labels()


if __name__ == "__main__":
    main()
