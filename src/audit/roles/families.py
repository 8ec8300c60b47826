"""Built-in family specifications (the same schema users write, see spec.py).

Names follow the Hugging Face checkpoints of each family; prefixes that vary
between the base model and its ``*ForCausalLM`` wrapper are stripped first.
"""

from __future__ import annotations

from audit.roles.spec import FamilySpec


def _proj(prefix: str, names: dict[str, str], bias: bool = False) -> dict[str, str]:
    roles = {role: f"{prefix}.{name}.weight" for role, name in names.items()}
    if bias:
        roles |= {f"{role}.bias": f"{prefix}.{name}.bias" for role, name in names.items()}
    return roles


_L = "layers.{layer}"
_LLAMA_ATTN = _proj(f"{_L}.self_attn", {"attn.q": "q_proj", "attn.k": "k_proj", "attn.v": "v_proj", "attn.o": "o_proj"}, bias=True) | {
    "attn.q_norm": f"{_L}.self_attn.q_norm.weight",
    "attn.k_norm": f"{_L}.self_attn.k_norm.weight",
}
_LLAMA_NORMS = {"norm.attn": f"{_L}.input_layernorm.weight", "norm.mlp": f"{_L}.post_attention_layernorm.weight"}
_LLAMA_MLP = _proj(f"{_L}.mlp", {"mlp.gate": "gate_proj", "mlp.up": "up_proj", "mlp.down": "down_proj"})
_LLAMA_GLOBAL = {"embed": "embed_tokens.weight", "norm.final": "norm.weight", "head": "lm_head.weight"}
_SWIGLU = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
_ROPE_BUFFERS = [f"{_L}.self_attn.rotary_emb.inv_freq"]


def _llama_like(family: str, architectures: list[str], model_types: list[str], **extra) -> dict:
    spec = {
        "family": family,
        "architectures": architectures,
        "model_types": model_types,
        "strip_prefixes": ["model."],
        "global": dict(_LLAMA_GLOBAL),
        "layer": _LLAMA_ATTN | _LLAMA_NORMS | _LLAMA_MLP,
        "ignore": list(_ROPE_BUFFERS),
    }
    for key, value in extra.items():
        spec[key] = spec[key] | value if isinstance(value, dict) and key in spec else value
    return spec


BUILTIN_SPECS: list[dict] = [
    _llama_like(
        "llama",
        ["LlamaForCausalLM", "LlamaModel", "MistralForCausalLM", "MistralModel", "Qwen2ForCausalLM", "Qwen2Model",
         "Qwen3ForCausalLM", "Qwen3Model", "YiForCausalLM"],
        ["llama", "mistral", "qwen2", "qwen3", "yi"],
    ),
    _llama_like(
        "mixtral",
        ["MixtralForCausalLM", "MixtralModel"],
        ["mixtral"],
        layer={"moe.router": f"{_L}.block_sparse_moe.gate.weight"},
        expert={"gate": f"{_L}.block_sparse_moe.experts.{{expert}}.w1.weight",
                "up": f"{_L}.block_sparse_moe.experts.{{expert}}.w3.weight",
                "down": f"{_L}.block_sparse_moe.experts.{{expert}}.w2.weight"},
    ),
    _llama_like(
        "qwen2-moe",
        ["Qwen2MoeForCausalLM", "Qwen2MoeModel", "Qwen3MoeForCausalLM", "Qwen3MoeModel"],
        ["qwen2_moe", "qwen3_moe"],
        layer={"moe.router": f"{_L}.mlp.gate.weight", "moe.shared_router": f"{_L}.mlp.shared_expert_gate.weight"},
        expert=_proj(f"{_L}.mlp.experts.{{expert}}", _SWIGLU),
        shared_expert=_proj(f"{_L}.mlp.shared_expert", _SWIGLU),
    ),
    _llama_like(
        "deepseek-moe",
        ["DeepseekForCausalLM", "DeepseekModel"],
        ["deepseek"],
        layer={"moe.router": f"{_L}.mlp.gate.weight"},
        expert=_proj(f"{_L}.mlp.experts.{{expert}}", _SWIGLU),
        shared_expert=_proj(f"{_L}.mlp.shared_experts", _SWIGLU),
    ),
    _llama_like(
        "baichuan",
        ["BaichuanForCausalLM", "BaiChuanForCausalLM"],
        ["baichuan"],
        fused={f"{_L}.self_attn.W_pack.weight": {"split": "qkv", "into": ["attn.q", "attn.k", "attn.v"]}},
    ),
    _llama_like(
        "phi3",
        ["Phi3ForCausalLM", "Phi3Model"],
        ["phi3"],
        fused={
            f"{_L}.self_attn.qkv_proj.weight": {"split": "qkv", "into": ["attn.q", "attn.k", "attn.v"]},
            f"{_L}.mlp.gate_up_proj.weight": {"split": "halves", "into": ["mlp.gate", "mlp.up"]},
        },
    ),
    {
        "family": "gpt2",
        "architectures": ["GPT2LMHeadModel", "GPT2Model"],
        "model_types": ["gpt2"],
        "strip_prefixes": ["transformer."],
        "layer_layout": "in_out",
        "global": {"embed": "wte.weight", "embed.pos": "wpe.weight", "norm.final": "ln_f.weight",
                   "norm.final.bias": "ln_f.bias", "head": "lm_head.weight"},
        "layer": _proj("h.{layer}", {"attn.o": "attn.c_proj", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj",
                                     "norm.attn": "ln_1", "norm.mlp": "ln_2"}, bias=True),
        "fused": {
            "h.{layer}.attn.c_attn.weight": {"split": "qkv", "into": ["attn.q", "attn.k", "attn.v"]},
            "h.{layer}.attn.c_attn.bias": {"split": "qkv", "into": ["attn.q.bias", "attn.k.bias", "attn.v.bias"]},
        },
        "ignore": ["h.{layer}.attn.bias", "h.{layer}.attn.masked_bias"],
    },
    {
        "family": "gpt-neox",
        "architectures": ["GPTNeoXForCausalLM", "GPTNeoXModel"],
        "model_types": ["gpt_neox"],
        "strip_prefixes": ["gpt_neox."],
        "global": {"embed": "embed_in.weight", "norm.final": "final_layer_norm.weight",
                   "norm.final.bias": "final_layer_norm.bias", "head": "embed_out.weight"},
        "layer": _proj(_L, {"attn.o": "attention.dense", "mlp.up": "mlp.dense_h_to_4h", "mlp.down": "mlp.dense_4h_to_h",
                            "norm.attn": "input_layernorm", "norm.mlp": "post_attention_layernorm"}, bias=True),
        "fused": {
            f"{_L}.attention.query_key_value.weight": {"split": "qkv-per-head", "into": ["attn.q", "attn.k", "attn.v"]},
            f"{_L}.attention.query_key_value.bias": {"split": "qkv-per-head", "into": ["attn.q.bias", "attn.k.bias", "attn.v.bias"]},
        },
        "ignore": [f"{_L}.attention.bias", f"{_L}.attention.masked_bias", f"{_L}.attention.rotary_emb.inv_freq"],
    },
    {
        "family": "bert",
        "architectures": ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"],
        "model_types": ["bert"],
        "strip_prefixes": ["bert."],
        "global": {"embed": "embeddings.word_embeddings.weight", "embed.pos": "embeddings.position_embeddings.weight",
                   "embed.type": "embeddings.token_type_embeddings.weight", "norm.embed": "embeddings.LayerNorm.weight",
                   "norm.embed.bias": "embeddings.LayerNorm.bias", "head": "cls.predictions.decoder.weight"},
        "layer": _proj("encoder.layer.{layer}", {
            "attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
            "attn.o": "attention.output.dense", "norm.attn": "attention.output.LayerNorm",
            "mlp.up": "intermediate.dense", "mlp.down": "output.dense", "norm.mlp": "output.LayerNorm"}, bias=True),
        "ignore": ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias", "cls.predictions.bias",
                   "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                   "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                   "cls.predictions.decoder.bias", "cls.seq_relationship.weight", "cls.seq_relationship.bias"],
    },
]

def _with_tf_layernorm_names(spec: dict) -> dict:
    """BERT checkpoints converted from TensorFlow name LayerNorm gains gamma and beta."""
    for kind in ("global", "layer"):
        for role, template in spec[kind].items():
            if ".LayerNorm." in template:
                tf_name = template.replace(".weight", ".gamma").replace(".bias", ".beta")
                spec[kind][role] = [template, tf_name]
    return spec


BUILTIN_SPECS[-1] = _with_tf_layernorm_names(BUILTIN_SPECS[-1])

BUILTINS: dict[str, FamilySpec] = {}
for _data in BUILTIN_SPECS:
    BUILTINS[_data["family"]] = FamilySpec.from_dict(_data)
