"""robust-match: hidden-unit matching that survives hidden-unit and residual-basis permutations.

1. Align B's residual basis to A's: the embedding rows of tokens both
   vocabularies share give each residual coordinate a column vector; columns
   are centred and matched by optimal assignment on |cosine|, and the sign of
   each matched cosine is kept (a residual coordinate may be negated, which
   RMSNorm and the weights absorb).
2. In each layer, with B's gate and up rows expressed in A's basis, match
   the hidden units twice: once from the gate rows, once from the up rows.
3. Test whether the two matchings agree (Spearman rho between them; for a
   derived model both recover the same hidden-unit correspondence, whatever
   permutation was applied).  Layers combine as in neuron-match.

Not exact: within one model, a unit's gate and up rows are trained together
and can be correlated, so even independent models can produce agreeing
matchings.  The method is reported as uncalibrated until independent pairs
of the reference zoo show its p-values are uniform.

Fingerprint: the embedding rows of ``tokens`` tokens chosen by a seeded hash
of the token *string* (the k lowest hashes), so two models keep the same
shared tokens without seeing each other; per MLP block the full gate and up
rows of its hidden units: all of them in every layer when ``budget`` allows,
otherwise at least ``units`` per block, those with the largest product of
gate and up row norms (a choice that commutes with permutations, so a
permuted copy keeps the same units), in as many evenly spread layers as the
budget allows.
Cost in power: when units are subsampled, a fine-tuned copy keeps only part
of the selected set (norm ranks drift), and fewer layers enter Fisher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from audit.checkpoint import TensorView
from audit.checkpoint.tensor import require_finite
from audit.methods.base import Fingerprint, Model
from audit.methods.common import F32_BYTES, layer_budget, mlp_blocks, residual_width, sample_block, shape_mismatch
from audit.methods.matching import BlockEvidence, LayerMatchingMethod, match_rows
from audit.stats import hash_rank, spearman_log10

MIN_SHARED_TOKENS = 16


def _row_norms(view: TensorView) -> np.ndarray:
    return np.concatenate([np.sqrt(np.square(block).sum(axis=1)) for block in view.blocks()])


def _embedding(model: Model) -> TensorView | None:
    return model.roles.globals.get("embed") or model.roles.globals.get("head")


@dataclass(frozen=True)
class RobustMatch(LayerMatchingMethod):
    tokens: int = 128
    units: int = 64
    budget: int = 8 << 20

    name = "robust-match"
    tunable = ("budget",)
    reads_embeddings = True
    explanation = (
        "Like neuron-match, but immune to relabelling: it first lines up the two models' internal coordinates"
        ' through the words they both know, then pairs hidden units twice, from two different weight '
        'matrices, and checks whether the two pairings agree. A derived model, however shuffled, gives the '
        'same pairing both times. Its chance behaviour is not known exactly, so it only counts as evidence '
        'through a baseline population.'
    )
    reference = 'after Zhu et al., ICML 2025 (the robust test: matchings from gate and up rows must agree), with residual alignment through shared-token embeddings'
    measures = ("after aligning B's residual basis to A's through shared-token embeddings, per layer the Spearman "
                "rho between the hidden-unit matchings found from gate rows and from up rows; Fisher over layers")
    survives = "fine-tuning, rescaling, permutations (and sign flips) of hidden units and of the residual basis"
    exact = False
    calibrated = False
    caveat = ("not exact: gate and up rows of one unit are trained together, so agreement can arise without "
              "derivation; counts as evidence only once its calibration on independent zoo pairs is shown")

    def fingerprint_params(self) -> dict:
        return {"tokens": self.tokens, "units": self.units, "budget": self.budget}

    def requirement(self, model: Model) -> str | None:
        if not model.vocab:
            return "no tokenizer.json: the residual bases are aligned through the shared vocabulary"
        if _embedding(model) is None:
            return "no embedding matrix"
        if not any({"gate", "up"} <= set(b) for layer in model.roles.layers for b in mlp_blocks(layer).values()):
            return "no gated MLP (gate and up projections)"
        return None

    def extract(self, model: Model, seed: int) -> Fingerprint:
        width = residual_width(model.roles)
        embed = _embedding(model)
        vocab = {t: i for t, i in model.vocab.items() if 0 <= i < embed.shape[0]}
        names = sorted(vocab)
        chosen = [names[i] for i in np.argsort(hash_rank(seed, names), kind="stable")[: self.tokens]]
        ids = np.array([vocab[t] for t in chosen], dtype=np.int64)
        embedding = sample_block(embed, ids, np.arange(width))
        require_finite(embedding, embed.name)
        arrays = {"embed": embedding.astype(np.float32)}
        gated = [{n: b for n, b in mlp_blocks(layer).items() if {"gate", "up"} <= set(b) and b["up"].shape[1] == width}
                 for layer in model.roles.layers]
        left = max(0, self.budget - embedding.size * F32_BYTES)
        row_bytes = 2 * width * F32_BYTES  # one unit: its gate and up rows
        most_blocks = max(len(blocks) for blocks in gated)
        # Every unit of every layer when the budget allows, else at least ``units`` per block in fewer layers.
        keep = max(self.units, left // (row_bytes * model.roles.depth * max(most_blocks, 1)))
        per_layer = max(sum(min(b["up"].shape[0], keep) for b in blocks.values()) for blocks in gated)
        blocks_meta = {}
        for index in layer_budget(left, per_layer * row_bytes, model.roles.depth):
            blocks_meta[str(index)] = {}
            for name, block in gated[index].items():
                score = _row_norms(block["gate"]) * _row_norms(block["up"])
                units = np.sort(np.argsort(-score, kind="stable")[:keep])
                for role in ("gate", "up"):
                    values = sample_block(block[role], units, np.arange(width))
                    require_finite(values, block[role].name)
                    arrays[f"{role}.{index}.{name}"] = values.astype(np.float32)
                blocks_meta[str(index)][name] = int(units.size)
        return self.make(seed, {"width": width, "depth": model.roles.depth, "tokens": chosen, "blocks": blocks_meta},
                         arrays)

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := super().mismatch(a, b) or shape_mismatch(a, b, "layers are matched by index"):
            return reason
        shared = len(set(a.meta["tokens"]) & set(b.meta["tokens"]))
        if shared < MIN_SHARED_TOKENS:
            return f"only {shared} sampled tokens are shared (at least {MIN_SHARED_TOKENS} needed to align the bases)"
        return None

    def alignment(self, a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray, float]:
        """B's residual coordinate matched to each of A's, its sign, and the mean |cosine| of the matches."""
        where_b = {t: i for i, t in enumerate(b.meta["tokens"])}
        shared = [(i, where_b[t]) for i, t in enumerate(a.meta["tokens"]) if t in where_b]
        ea = a.arrays["embed"][[i for i, _ in shared]].astype(np.float64)
        eb = b.arrays["embed"][[j for _, j in shared]].astype(np.float64)
        ca, cb = (e - e.mean(axis=0) for e in (ea, eb))
        na, nb = np.linalg.norm(ca, axis=0), np.linalg.norm(cb, axis=0)
        cosine = (ca.T @ cb) / np.outer(np.where(na == 0, 1, na), np.where(nb == 0, 1, nb))
        rows, cols = linear_sum_assignment(np.abs(cosine), maximize=True)
        matched = cosine[rows, cols]
        return cols, np.where(matched < 0, -1.0, 1.0), float(np.abs(matched).mean())

    def pvalue_model(self) -> str:
        return ("per pair: Spearman rho between the gate-row and up-row matchings, one-sided t approximation floored "
                "at 1/n! (assumes the two matchings are independent under H0: unverified, see caveat)")

    def evidence(self, a: Fingerprint, b: Fingerprint) -> tuple[list[BlockEvidence], dict]:
        order, signs, quality = self.alignment(a, b)
        found = []
        for layer, blocks_a in a.meta["blocks"].items():
            for y in b.meta["blocks"].get(layer, {}):
                for x in blocks_a:
                    agree = [self._match(a.arrays[f"{r}.{layer}.{x}"], b.arrays[f"{r}.{layer}.{y}"], order, signs)
                             for r in ("gate", "up")]
                    rho, log10_p = spearman_log10(*agree)
                    found.append(BlockEvidence(int(layer), x, y, rho, log10_p, len(agree[0])))
        shared = len(set(a.meta["tokens"]) & set(b.meta["tokens"]))
        return found, {"shared_tokens": shared, "alignment_mean_abs_cosine": quality}

    @staticmethod
    def _match(rows_a: np.ndarray, rows_b: np.ndarray, order: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Matching of the smaller side's units into the other's, B's rows in A's residual basis."""
        aligned = rows_b.astype(np.float64)[:, order] * signs
        rows_a = rows_a.astype(np.float64)
        return match_rows(rows_a, aligned) if len(rows_a) <= len(aligned) else match_rows(aligned, rows_a)
