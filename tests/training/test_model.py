"""The GPT-2 network: its design choices, checked one by one, and agreement with transformers' GPT-2 on real text."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import gpt2_encoding, shared_data
from training.hf import HFFormatError, export_hf, import_hf
from training.model import GPT, GPTConfig, IGNORE_INDEX, SIZES, mask_for_mlm


def small(**kw) -> GPTConfig:
    return GPTConfig(**{"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64, "vocab_size": 300, **kw})


def test_named_sizes_have_gpt2_parameter_counts():
    # transformers' GPT2LMHeadModel parameter counts for OpenAI's four checkpoints (tied head counted once).
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200}
    for size, count in expected.items():
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = GPT(GPTConfig.named(size))
        assert model.num_params(non_embedding=False) == count, size
        assert model.num_params() == count - 1024 * SIZES[size][2], size


def test_head_is_tied_and_padding_rows_are_never_emitted():
    model = GPT(small(pad_vocab_to=64))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.wte.weight.shape[0] == 320
    logits, _ = model(torch.randint(0, 300, (2, 10)))
    assert logits.shape == (2, 10, 300)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=1000)
    model = GPT(cfg)
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert block.attn.c_attn.bias.abs().max().item() == 0.0
    assert block.ln_1.weight.min().item() == 1.0


def test_pre_layernorm_blocks_and_final_layernorm():
    model = GPT(small())
    names = [n for n, _ in model.named_modules()]
    assert "transformer.h.0.ln_1" in names and "transformer.h.0.ln_2" in names and "transformer.ln_f" in names
    # Pre-LN: a block whose sub-blocks output zero is the identity, whatever its LayerNorms do.
    block = model.transformer.h[0]
    for proj in (block.attn.c_proj, block.mlp.c_proj):
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(block(x), x)


def test_causal_attention_ignores_the_future_and_mlm_does_not():
    torch.manual_seed(0)
    idx = torch.randint(0, 300, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 300
    clm = GPT(small()).eval()
    torch.testing.assert_close(clm(idx)[0][:, :8], clm(changed)[0][:, :8])
    mlm = GPT(small(objective="mlm")).eval()
    assert not torch.allclose(mlm(idx)[0][:, :8], mlm(changed)[0][:, :8])


def test_loss_at_init_is_near_uniform_and_training_lowers_it():
    torch.manual_seed(0)
    model = GPT(small())
    idx = torch.randint(0, 300, (4, 32))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    assert loss.item() == pytest.approx(math.log(300), abs=0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
    assert loss.item() < 1.0


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = GPT(small())
    ckpt = GPT(small(activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 300, (2, 16))
    for m in (plain, ckpt):
        m(idx[:, :-1], idx[:, 1:])[1].backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_mlm_masking_follows_bert_proportions():
    cfg = small(objective="mlm")
    tokens = torch.randint(0, 300, (64, 64))
    inputs, targets = mask_for_mlm(tokens, cfg, torch.Generator().manual_seed(0))
    chosen = targets != IGNORE_INDEX
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.02)
    assert torch.equal(targets[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    masked = (inputs == cfg.mask_token_id)
    assert (masked & chosen).sum().item() / chosen.sum().item() == pytest.approx(0.8, abs=0.04)
    assert not (masked & ~chosen).any()
    model = GPT(cfg)
    logits, loss = model(inputs, targets)
    assert logits.shape[-1] == 300 and math.isfinite(loss.item())


def test_the_head_runs_only_where_a_target_is_with_the_loss_and_gradients_of_every_position():
    torch.manual_seed(0)
    model = GPT(small())
    idx = torch.randint(0, 300, (3, 12))
    targets = torch.randint(0, 300, (3, 12))
    targets[:, :7] = IGNORE_INDEX  # a fine-tuning row: the prompt carries no loss
    targets[1] = IGNORE_INDEX  # and a row with none at all
    logits, loss = model(idx, targets)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    full, _ = model(idx)
    scored = targets != IGNORE_INDEX
    assert logits.shape == (int(scored.sum()), 300)
    torch.testing.assert_close(logits, full[scored])
    reference = torch.nn.functional.cross_entropy(full.reshape(-1, 300), targets.reshape(-1))
    torch.testing.assert_close(loss, reference)
    reference.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, msg=name)


def test_sampling_appends_tokens_never_from_the_padding_rows():
    from training.generate import Sampling, generate_ids

    model = GPT(small()).eval()
    assert not hasattr(model, "generate")  # one sampler: training/generate.py
    out = generate_ids(model, [[0, 0, 0]], Sampling(max_new_tokens=5, top_k=10, seed=0, stop_ids=()))
    assert len(out[0]) == 5 and max(out[0]) < model.config.vocab_size


def test_hf_export_loads_in_transformers_with_the_same_logits_on_real_text(tmp_path):
    transformers = pytest.importorskip("transformers")
    gpt2_dir = shared_data("gpt2")
    text = shared_data("prose", "hamlet_gut.txt").read_text(encoding="utf-8")[20_000:30_000]
    enc = gpt2_encoding(gpt2_dir)
    ids = torch.tensor([enc.encode_ordinary(text)[:256]] * 2)

    torch.manual_seed(0)
    cfg = GPTConfig.named("tiny", block_size=256, pad_vocab_to=64)
    model = GPT(cfg).eval()
    # Perturb biases and LayerNorms away from their init so every tensor's mapping is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    export_hf(model, cfg, tmp_path / "hf", tokenizer_dir=gpt2_dir)

    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ours_logits, _ = model(ids)
        their_logits = theirs(ids).logits
    assert their_logits.shape == ours_logits.shape == (2, 256, 50257)
    assert (ours_logits - their_logits).abs().max().item() <= 1e-4

    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]

    back = import_hf(tmp_path / "hf", pad_vocab_to=64).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids)[0], ours_logits, rtol=0, atol=0)


HF_VARIANTS = [
    {"tie_word_embeddings": False},
    {"layer_norm_epsilon": 0.1},
    {"scale_attn_by_inverse_layer_idx": True},
    {"reorder_and_upcast_attn": True},
    {"tie_word_embeddings": False, "layer_norm_epsilon": 1e-3, "scale_attn_by_inverse_layer_idx": True,
     "reorder_and_upcast_attn": True},  # Mistral's GPT-2 models set the last two
]


@pytest.mark.parametrize("variant", HF_VARIANTS, ids=lambda v: "+".join(v))
def test_hf_gpt2_variants_import_with_transformers_logits_and_export_back(variant, tmp_path):
    transformers = pytest.importorskip("transformers")
    # Large init: attention scores far from uniform, so a missing 1/(layer+1) scale shows in the logits.
    config = transformers.GPT2Config(n_layer=3, n_head=4, n_embd=32, n_positions=32, vocab_size=100,
                                     initializer_range=0.3, attn_implementation="eager", **variant)
    torch.manual_seed(0)
    theirs = transformers.GPT2LMHeadModel(config).eval()  # eager: the path where reorder_and_upcast_attn acts
    theirs.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        expected = theirs(ids).logits

    ours = import_hf(tmp_path / "hf", pad_vocab_to=64).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], expected, rtol=0, atol=1e-5)
    assert (ours.lm_head.weight is ours.transformer.wte.weight) == variant.get("tie_word_embeddings", True)

    export_hf(ours, ours.config, tmp_path / "back")  # and out again: transformers rebuilds the same model
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back", attn_implementation="eager").eval()
    for key, value in variant.items():
        assert getattr(again.config, key) == value, key
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("key,value", [("scale_attn_weights", False), ("add_cross_attention", True)])
def test_hf_configs_the_model_cannot_represent_are_refused_naming_the_key(key, value, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50, **{key: value})
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf")
    with pytest.raises(HFFormatError, match=f"config.json: {key} {value!r} is not supported"):
        import_hf(tmp_path / "hf")
