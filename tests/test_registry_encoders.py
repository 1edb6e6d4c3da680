"""Every registered encoder family: config from / to an HF config dict, strict keys, a clear error for
an unknown model_type, and a name map that round-trips (HF names -> params -> HF names).

A new family must add its tiny HF config to TINY_HF (the first test fails until it does); its
numerical parity with transformers goes in tests/test_hf_parity.py.
"""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.models import registry
from sentjax.models.hf_weights import CheckpointError, hf_to_params, params_to_hf
from sentjax.models.sentence_model import SentenceEncoderModule, abstract_params, init_params

_BERT_LIKE = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=24, max_position_embeddings=40)
TINY_HF = {  # model_type -> a tiny config.json as transformers writes it (extra HF keys included)
    "bert": dict(_BERT_LIKE, model_type="bert", type_vocab_size=2, architectures=["BertModel"],
                 transformers_version="5.0.0", use_cache=True),
    "roberta": dict(_BERT_LIKE, model_type="roberta", type_vocab_size=1, pad_token_id=1,
                    layer_norm_eps=1e-5, bos_token_id=0),
    "xlm-roberta": dict(_BERT_LIKE, model_type="xlm-roberta", type_vocab_size=1, pad_token_id=1),
    "camembert": dict(_BERT_LIKE, model_type="camembert", type_vocab_size=1, pad_token_id=1,
                      hidden_act="gelu_new"),
    # decoder family (sentjax/models/llama.py)
    "llama": dict(_BERT_LIKE, model_type="llama", num_key_value_heads=1, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                  architectures=["LlamaForCausalLM"], tie_word_embeddings=True),
    "qwen2": dict(_BERT_LIKE, model_type="qwen2", num_key_value_heads=2, rope_theta=1e6,
                  use_sliding_window=False, sliding_window=None, eos_token_id=3),
    "mpnet": dict(_BERT_LIKE, model_type="mpnet", pad_token_id=1, relative_attention_num_buckets=32,
                  bos_token_id=0, eos_token_id=2, architectures=["MPNetForMaskedLM"]),
}
MODEL_TYPES = sorted(TINY_HF)


def test_every_registered_model_type_is_tested():
    assert registry.supported_model_types() == MODEL_TYPES
    for family in registry.families():
        assert set(family.model_types) <= set(TINY_HF), family.name


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_from_hf_and_back(model_type):
    raw = TINY_HF[model_type]
    family = registry.get_encoder(model_type)
    cfg = registry.config_from_hf(raw, source="tiny/config.json")
    assert isinstance(cfg, family.config_cls) and cfg.model_type == model_type
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings"):
        assert getattr(cfg, key) == raw[key]
    assert cfg.pad_token_id == raw.get("pad_token_id", 0)
    assert cfg.max_tokens == cfg.max_position_embeddings - cfg.position_offset
    hf = cfg.to_hf_dict()
    assert hf["model_type"] == model_type and hf["architectures"]
    assert family.config_from_hf(hf) == cfg
    # sentjax's own (strict) form round-trips too
    assert registry.config_from_dict(dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hf_config_dict_is_read_by_transformers(model_type):
    transformers = pytest.importorskip("transformers")
    hf = registry.config_from_hf(TINY_HF[model_type]).to_hf_dict()
    theirs = transformers.AutoConfig.for_model(**hf)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "pad_token_id", "layer_norm_eps",
                "type_vocab_size", "hidden_act", "rms_norm_eps", "num_key_value_heads", "head_dim",
                "relative_attention_num_buckets"):
        if key in hf:  # each family writes the keys of its architecture (MPNet: no token types)
            assert getattr(theirs, key) == hf[key], key


def test_unknown_model_type_lists_the_supported_ones():
    with pytest.raises(ConfigError, match=r"x/config.json: model_type 'gpt2' is not supported; "
                                          r"sentjax encodes " + re.escape(", ".join(MODEL_TYPES))):
        registry.config_from_hf(dict(_BERT_LIKE, model_type="gpt2"), source="x/config.json")
    with pytest.raises(ConfigError, match="'gpt2' is not supported"):
        registry.get_encoder("gpt2")
    with pytest.raises(ConfigError, match="'gpt2' is not supported"):
        registry.config_from_dict({"model_type": "gpt2"})
    with pytest.raises(ConfigError, match="expected a JSON object"):
        registry.config_from_hf(["bert"])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_foreign_key_is_an_error_listing_the_valid_ones(model_type):
    family = registry.get_encoder(model_type)
    own = dataclasses.asdict(registry.config_from_hf(TINY_HF[model_type]))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hidden_sise'\].*valid keys: .*hidden_size"):
        family.config_from_dict(dict(own, hidden_sise=8))
    with pytest.raises(ConfigError, match=r"model.encoder: unknown key\(s\) \['temperature'\]"):
        registry.config_from_dict(dict(own, temperature=0.05))
    # a missing required key of an HF config.json is named
    raw = {k: v for k, v in TINY_HF[model_type].items() if k != "hidden_size"}
    with pytest.raises(ConfigError, match="missing required key.*hidden_size"):
        registry.config_from_hf(raw)


def test_registering_a_model_type_twice_is_refused():
    bert = registry.get_encoder("bert")
    other = dataclasses.replace(bert, name="other", model_types=("brand-new", "bert"))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_encoder(other)
    assert "brand-new" not in registry.supported_model_types()  # nothing half-registered


def _perturbed(params, seed=0):
    """Random init leaves LayerNorm at 1 and biases at 0: make every tensor distinct."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [np.asarray(x + 0.05 * jax.random.normal(k, x.shape), np.float32)
                                     for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_name_map_round_trips(model_type):
    family = registry.get_encoder(model_type)
    cfg = registry.config_from_hf(TINY_HF[model_type])
    module = SentenceEncoderModule(cfg, pooling="mean")
    params = _perturbed(init_params(module, jax.random.key(0)))
    abstract = abstract_params(module)["encoder"]
    nmap = family.name_map

    # the two directions are inverses on every parameter, and agree on transposition
    flat = {path: v for path, v in jax.tree_util.tree_flatten_with_path(params["encoder"])[0]}
    for key_path in flat:
        path = tuple(k.key for k in key_path)
        name, transposed = nmap.to_hf(path)
        assert nmap.from_hf(name) == (path, transposed), name

    # params -> HF tensors -> params -> HF tensors
    hf = params_to_hf(params["encoder"], nmap)
    assert len(hf) == len(flat) and all(not nmap.skipped(n) for n in hf)
    back = hf_to_params(hf, abstract, name_map=nmap)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params["encoder"]))
    again = params_to_hf(back, nmap)
    assert sorted(again) == sorted(hf)
    for name in hf:
        np.testing.assert_array_equal(again[name], hf[name])

    # as a task checkpoint: base-model prefix, a head and buffers are tolerated
    prefix = nmap.base_prefixes[0] if nmap.base_prefixes else ""
    task = {prefix + n: v for n, v in hf.items()}
    if nmap.head_prefixes:
        task[nmap.head_prefixes[0] + "dense.weight"] = np.zeros((3, cfg.hidden_size), np.float32)
    loaded = hf_to_params(task, abstract, name_map=nmap)
    jax.tree.map(np.testing.assert_array_equal, loaded, back)

    # a checkpoint from another architecture is named tensor by tensor
    some = sorted(hf)[0]
    broken = dict(hf, **{"not.a.parameter.weight": np.zeros(2, np.float32)})
    del broken[some]
    with pytest.raises(CheckpointError) as e:
        hf_to_params(broken, abstract, name_map=nmap)
    assert some in str(e.value) and "missing" in str(e.value)
    assert "not.a.parameter.weight" in str(e.value) and "unexpected" in str(e.value)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_sentence_module_composes_the_family_with_a_pooler(model_type):
    family = registry.get_encoder(model_type)
    cfg = registry.config_from_hf(TINY_HF[model_type])
    module = SentenceEncoderModule(cfg, pooling="cls_mlp", normalize=True)
    params = init_params(module, jax.random.key(1))
    assert set(params) == {"encoder", "pooler"}
    alone = family.module(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    assert jax.tree.structure(alone) == jax.tree.structure(params["encoder"])
    ids = jnp.asarray([[5, 6, 7, 8], [9, 10, cfg.pad_token_id, cfg.pad_token_id]], jnp.int32)
    emb = module.apply({"params": params}, {"input_ids": ids, "attention_mask": (ids != cfg.pad_token_id).astype(jnp.int32)})
    assert emb.shape == (2, cfg.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, rtol=1e-5)
    # the word-embedding path the vocabulary transfer rewrites exists, [vocab, hidden]
    node = params["encoder"]
    for key in family.word_embeddings:
        node = node[key]
    assert node.shape == (cfg.vocab_size, cfg.hidden_size)
