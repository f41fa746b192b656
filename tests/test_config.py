"""Config: presets against the released config.json values, both transformers generations of
config.json, clear errors, YAML files generated from the presets, and parameter counts."""

import json
import os

import pytest

from qwen3_jax import ConfigError, Qwen3Config, param_count
from qwen3_jax.presets import PRESETS, RELEASED, get_preset, load_yaml, yaml_filename, yaml_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The released config.json files (Qwen/Qwen3-*): hidden, intermediate, layers, q heads, kv heads, tied
RELEASED_VALUES = {
    "Qwen3-0.6B": (1024, 3072, 28, 16, 8, True),
    "Qwen3-1.7B": (2048, 6144, 28, 16, 8, True),
    "Qwen3-4B": (2560, 9728, 36, 32, 8, True),
    "Qwen3-8B": (4096, 12288, 36, 32, 8, False),
    "Qwen3-14B": (5120, 17408, 40, 40, 8, False),
    "Qwen3-32B": (5120, 25600, 64, 64, 8, False),
    "Qwen3-30B-A3B": (2048, 6144, 48, 32, 4, False),
    "Qwen3-235B-A22B": (4096, 12288, 94, 64, 4, False),
}

# The Qwen3 model cards: (total, active) in billions, at the precision the cards give them
PARAM_COUNTS = {
    "Qwen3-0.6B": ("0.596", None), "Qwen3-1.7B": ("1.721", None), "Qwen3-4B": ("4.022", None),
    "Qwen3-8B": ("8.191", None), "Qwen3-14B": ("14.768", None), "Qwen3-32B": ("32.762", None),
    "Qwen3-30B-A3B": ("30.53", "3.35"), "Qwen3-235B-A22B": ("235.09", "22.19"),
}


@pytest.mark.parametrize("name", RELEASED)
def test_released_preset_values(name):
    c = get_preset(name)
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.tie_word_embeddings) == RELEASED_VALUES[name]
    assert (c.vocab_size, c.head_dim, c.rms_norm_eps, c.rope_theta, c.max_position_embeddings) == (
        151936, 128, 1e-6, 1e6, 40960)
    assert (c.bos_token_id, c.eos_token_id, c.rope_scaling) == (151643, 151645, None)
    if "A" in name.split("-")[-1]:
        assert (c.num_experts, c.num_experts_per_tok, c.norm_topk_prob, c.decoder_sparse_step,
                c.mlp_only_layers, c.router_aux_loss_coef) == (128, 8, True, 1, (), 0.001)
        assert c.moe_intermediate_size == {"Qwen3-30B-A3B": 768, "Qwen3-235B-A22B": 1536}[name]
        assert set(c.layer_kinds) == {"moe"}
    else:
        assert not c.is_moe and set(c.layer_kinds) == {"dense"}


@pytest.mark.parametrize("name", RELEASED)
def test_parameter_counts_from_abstract_shapes(name):
    total, active = param_count(get_preset(name))
    want_total, want_active = PARAM_COUNTS[name]
    digits = len(want_total.split(".")[1])
    assert f"{total / 1e9:.{digits}f}" == want_total
    if want_active:
        assert f"{active / 1e9:.{len(want_active.split('.')[1])}f}" == want_active
    else:
        assert active == total


def test_preset_lookup_is_case_insensitive_and_errors_name_the_choices():
    assert get_preset("qwen3-30b-a3b") is PRESETS["Qwen3-30B-A3B"]
    with pytest.raises(KeyError, match="Qwen3-8B"):
        get_preset("qwen3-9b")


@pytest.mark.parametrize("name", list(PRESETS))
def test_yaml_files_are_generated_from_presets(name):
    path = os.path.join(ROOT, "configs", "models", yaml_filename(name))
    with open(path, encoding="utf-8") as f:
        assert f.read() == yaml_text(PRESETS[name]), f"{path} is stale: run `qwen3-jax presets --write configs/models`"
    assert load_yaml(path) == PRESETS[name]


def test_no_stray_yaml_files():
    files = set(os.listdir(os.path.join(ROOT, "configs", "models")))
    assert files == {yaml_filename(n) for n in PRESETS}


HF_451_MOE = {  # the field names of the released checkpoints (transformers 4.51)
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 151936,
    "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "rope_scaling": None, "max_position_embeddings": 40960, "num_experts": 128,
    "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "router_aux_loss_coef": 0.001, "tie_word_embeddings": False, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "attention_bias": False, "use_sliding_window": False,
}


def test_reads_transformers_451_and_5_config_names():
    old = Qwen3Config.from_hf_dict(HF_451_MOE)
    new_style = dict(HF_451_MOE)
    del new_style["rope_theta"], new_style["rope_scaling"], new_style["num_experts"]
    new_style["rope_parameters"] = {"rope_theta": 1000000.0, "rope_type": "default"}
    new_style["num_local_experts"] = 128
    new = Qwen3Config.from_hf_dict(new_style)
    assert old == new
    assert old.replace(name="Qwen3-30B-A3B") == PRESETS["Qwen3-30B-A3B"]


def test_yarn_scaling_in_both_generations():
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    old = Qwen3Config.from_hf_dict({**HF_451_MOE, "rope_scaling": scaling})
    new_style = {k: v for k, v in HF_451_MOE.items() if k not in ("rope_theta", "rope_scaling")}
    new = Qwen3Config.from_hf_dict({**new_style, "rope_parameters": {"rope_theta": 1e6, **scaling}})
    assert old == new and old.rope_scaling.factor == 4.0 and old.rope_scaling.original_max_position_embeddings == 32768


@pytest.mark.parametrize("name", RELEASED + ("tiny-moe",))
def test_hf_dict_round_trip_and_transformers_reads_it(name, tmp_path):
    import transformers
    cfg = PRESETS[name]
    d = cfg.to_hf_dict()
    assert Qwen3Config.from_hf_dict(d, name=cfg.name) == cfg
    (tmp_path / "config.json").write_text(json.dumps(d))
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == cfg.model_type and hf.head_dim == cfg.head_dim
    assert hf.num_hidden_layers == cfg.num_hidden_layers and hf.tie_word_embeddings == cfg.tie_word_embeddings
    assert hf.rope_parameters["rope_theta"] == cfg.rope_theta
    if cfg.is_moe:
        experts = getattr(hf, "num_experts", None) or getattr(hf, "num_local_experts")
        assert (experts, hf.num_experts_per_tok, hf.norm_topk_prob) == (cfg.num_experts, 8 if "A" in name else 2, True)


# Our field -> how transformers' config object holds it.
def _hf_value(hf, field):
    if field == "rope_theta":
        return hf.rope_parameters["rope_theta"]
    if field == "head_dim":
        return getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads  # as the attention takes it
    if field == "num_experts":
        return getattr(hf, "num_local_experts", getattr(hf, "num_experts", 0)) if hf.model_type == "qwen3_moe" else 0
    if field == "mlp_only_layers":
        return tuple(hf.mlp_only_layers)
    if field == "rope_scaling":
        return None if hf.rope_parameters.get("rope_type", "default") == "default" else hf.rope_parameters
    return getattr(hf, field)


HF_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings",
             "tie_word_embeddings", "bos_token_id", "eos_token_id", "num_experts")
MOE_FIELDS = ("num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step",
              "mlp_only_layers", "router_aux_loss_coef")


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_defaults_are_transformers_defaults(model_type):
    """One set of defaults: the dataclass's, a config.json with nothing but its model_type, and transformers'."""
    import transformers

    moe_cls = transformers.Qwen3MoeConfig
    hf_cls = transformers.Qwen3Config if model_type == "qwen3" else moe_cls
    got = Qwen3Config.from_hf_dict({"model_type": model_type})
    hf = hf_cls()
    for f in HF_FIELDS:
        assert getattr(got, f) == _hf_value(hf, f), f
    for f in MOE_FIELDS:  # a dense model's (unused) MoE fields take Qwen3MoeConfig's defaults too
        assert getattr(got, f) == _hf_value(moe_cls(), f), f
    if model_type == "qwen3":
        assert got == Qwen3Config()  # the dataclass defaults are the same ones


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_each_left_out_key_means_what_it_means_in_transformers(model_type, tmp_path):
    """A config.json without key k: transformers and `from_hf_dict` read the same value, for every k."""
    import transformers

    base = dict(HF_451_MOE) if model_type == "qwen3_moe" else {
        k: v for k, v in HF_451_MOE.items() if k not in ("num_experts",) + MOE_FIELDS}
    base.update(model_type=model_type, vocab_size=1000, hidden_size=128, intermediate_size=200, num_hidden_layers=3,
                num_attention_heads=32, num_key_value_heads=2, head_dim=40, rms_norm_eps=1e-5, rope_theta=5e5,
                max_position_embeddings=1234, tie_word_embeddings=True, bos_token_id=7, eos_token_id=[8, 9])
    if model_type == "qwen3_moe":
        base.update(num_experts=16, num_experts_per_tok=3, moe_intermediate_size=24, norm_topk_prob=True,
                    decoder_sparse_step=2, mlp_only_layers=[0], router_aux_loss_coef=0.02)
    fields = HF_FIELDS + (MOE_FIELDS if model_type == "qwen3_moe" else ())
    for key in [k for k in base if k in fields or k == "rope_theta"]:
        d = {k: v for k, v in base.items() if k != key}
        (tmp_path / "config.json").write_text(json.dumps(d))
        hf = transformers.AutoConfig.from_pretrained(tmp_path)
        got = Qwen3Config.from_hf_dict(d)
        for f in fields:
            want = _hf_value(hf, f)
            assert getattr(got, f) == (tuple(want) if isinstance(want, list) else want), (key, f)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "model_type='llama'"),
    ({"num_key_value_heads": 5}, "not a multiple of num_key_value_heads=5"),
    ({"num_experts_per_tok": 200}, "num_experts_per_tok=200"),
    ({"mlp_only_layers": [3, 60]}, r"mlp_only_layers \[60\]"),
    ({"attention_bias": True}, "attention_bias"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "'dynamic'"),
    ({"hidden_size": -4}, "hidden_size=-4"),
])
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        Qwen3Config.from_hf_dict({**HF_451_MOE, **change})


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as e:
        Qwen3Config(num_attention_heads=6, num_key_value_heads=4, head_dim=7)
    assert "not a multiple" in str(e.value) and "head_dim=7" in str(e.value)


def test_config_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Qwen3Config.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Qwen3Config.from_json_file(tmp_path / "config.json")


def test_layer_kinds_follow_sparse_step_and_mlp_only_layers():
    c = PRESETS["tiny-moe"].replace(num_hidden_layers=6, decoder_sparse_step=2, mlp_only_layers=(3,))
    assert c.layer_kinds == ("dense", "moe", "dense", "dense", "dense", "moe")
