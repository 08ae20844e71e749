"""KV-fusion self-attention against independent references."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0

from diffews._testing import build_tiny_model
from diffews.modeling.fsa import (
    CrossAttnProcessor,
    KVFusion,
    KVFusionAttnProcessor,
    KVRecorder,
    SupportContext,
)


@pytest.fixture(scope="module")
def attn_layer():
    """The first attn1 of a fresh tiny model, with its name."""
    model = build_tiny_model(seed=3)
    name = model.fsa_layers[0]
    return name, model.unet.get_submodule(name)


def manual_attention(attn, hidden: torch.Tensor, extra_keys: torch.Tensor, extra_values: torch.Tensor) -> torch.Tensor:
    """Plain-torch reference: per-head softmax(Q K^T * scale) V with support tokens appended, then to_out."""
    batch, tokens, width = hidden.shape
    heads = attn.heads
    q = attn.to_q(hidden)
    k = torch.cat([attn.to_k(hidden), extra_keys], dim=1)
    v = torch.cat([attn.to_v(hidden), extra_values], dim=1)
    out = torch.empty_like(q)
    head_dim = width // heads
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            weights = torch.softmax(q[b, :, cols] @ k[b, :, cols].T * head_dim**-0.5, dim=-1)
            out[b, :, cols] = weights @ v[b, :, cols]
    return attn.to_out[0](out)


def context_of(attn, name: str, supports: torch.Tensor, num_shots: int) -> SupportContext:
    """Context holding the layer's K/V of `supports` ``(S*K, L, C)`` as recorded by `KVRecorder`."""
    recorder = KVRecorder(num_shots)
    recorder(name, attn.to_k(supports), attn.to_v(supports))
    return recorder.context()


@torch.no_grad()
def test_own_keys_and_values_reproduce_plain_self_attention(attn_layer):
    name, attn = attn_layer
    hidden = torch.randn(2, 16, attn.to_q.in_features)
    plain = AttnProcessor2_0()(attn, hidden)
    # Support K/V equal to each query's own: every key appears twice, so the softmax weights halve
    # and the weighted average is unchanged.
    context = SupportContext(
        keys={name: attn.to_k(hidden)}, values={name: attn.to_v(hidden)}, num_shots=1
    )
    fused = KVFusionAttnProcessor(name)(attn, hidden, fsa=KVFusion(context))
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("num_shots", [1, 3])
def test_fused_attention_matches_manual_reference(attn_layer, num_shots):
    name, attn = attn_layer
    width = attn.to_q.in_features
    queries = torch.randn(2, 16, width)
    supports = torch.randn(num_shots, 16, width)
    context = context_of(attn, name, supports, num_shots)
    fused = KVFusionAttnProcessor(name)(attn, queries, fsa=KVFusion(context))
    support_k = attn.to_k(supports).reshape(1, -1, width).expand(2, -1, -1)
    support_v = attn.to_v(supports).reshape(1, -1, width).expand(2, -1, -1)
    torch.testing.assert_close(fused, manual_attention(attn, queries, support_k, support_v), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_without_exchange_processor_is_plain_self_attention(attn_layer):
    name, attn = attn_layer
    hidden = torch.randn(2, 16, attn.to_q.in_features)
    torch.testing.assert_close(KVFusionAttnProcessor(name)(attn, hidden), AttnProcessor2_0()(attn, hidden))


@torch.no_grad()
def test_recorder_leaves_attention_unchanged_and_joins_shots_per_set(attn_layer):
    name, attn = attn_layer
    sets, shots, tokens, width = 2, 3, 16, attn.to_q.in_features
    supports = torch.randn(sets * shots, tokens, width)
    recorder = KVRecorder(shots)
    out = KVFusionAttnProcessor(name)(attn, supports, fsa=recorder)
    torch.testing.assert_close(out, AttnProcessor2_0()(attn, supports))
    context = recorder.context()
    keys = attn.to_k(supports)
    assert context.keys[name].shape == (sets, shots * tokens, width)
    assert context.num_sets == sets and context.num_shots == shots
    # set 1 = shots 3..5, concatenated in order on the token axis
    torch.testing.assert_close(context.keys[name][1], torch.cat(list(keys[3:6])))


def test_fusion_rejects_mismatched_support_sets():
    context = SupportContext(keys={"l": torch.zeros(3, 8, 4)}, values={"l": torch.zeros(3, 8, 4)}, num_shots=1)
    with pytest.raises(ValueError, match="3 support sets but the query batch has 2"):
        KVFusion(context)("l", torch.zeros(2, 8, 4), torch.zeros(2, 8, 4))


@pytest.mark.parametrize("query_tokens", [4, 16])
def test_fusion_rejects_supports_of_another_resolution(query_tokens):
    context = SupportContext(keys={"l": torch.zeros(1, 16, 4)}, values={"l": torch.zeros(1, 16, 4)}, num_shots=2)
    own = torch.zeros(1, query_tokens, 4)
    with pytest.raises(ValueError, match=f"8 tokens per shot at a layer where the query has {query_tokens}"):
        KVFusion(context)("l", own, own)


def test_fusion_serves_queries_in_blocks_of_their_set():
    support = torch.randn(2, 8, 4)
    context = SupportContext(keys={"l": support}, values={"l": -support}, num_shots=1)
    own = torch.randn(6, 8, 4)
    keys, values = KVFusion(context)("l", own, own)
    assert keys.shape == values.shape == (6, 16, 4)
    for b in range(6):  # queries 0-2 take set 0, queries 3-5 set 1
        torch.testing.assert_close(keys[b], torch.cat([own[b], support[b // 3]]))
        torch.testing.assert_close(values[b], torch.cat([own[b], -support[b // 3]]))


def test_fusion_broadcasts_one_set_to_every_query():
    support = torch.randn(1, 8, 4)
    context = SupportContext(keys={"l": support}, values={"l": support}, num_shots=1)
    own = torch.randn(3, 8, 4)
    keys, _ = KVFusion(context)("l", own, own)
    assert keys.shape == (3, 16, 4)
    for b in range(3):
        torch.testing.assert_close(keys[b], torch.cat([own[b], support[0]]))


def test_every_transformer_self_attention_gets_fsa_and_cross_attention_stays_stock(tiny_model):
    blocks = [name for name, m in tiny_model.unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    assert sorted(tiny_model.fsa_layers) == sorted(f"{b}.attn1" for b in blocks)
    assert any(name.startswith("mid_block") for name in tiny_model.fsa_layers)
    for key, processor in tiny_model.unet.attn_processors.items():
        expected = KVFusionAttnProcessor if key.endswith("attn1.processor") else CrossAttnProcessor
        assert type(processor) is expected, key


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_attention_in_half_precision_tracks_fp32(attn_layer, dtype):
    name, attn = attn_layer
    width = attn.to_q.in_features
    queries, supports = torch.randn(2, 16, width), torch.randn(2, 16, width)
    reference = KVFusionAttnProcessor(name)(attn, queries, fsa=KVFusion(context_of(attn, name, supports, 2)))
    half = attn.to(dtype)
    try:
        context = context_of(half, name, supports.to(dtype), 2)
        out = KVFusionAttnProcessor(name)(half, queries.to(dtype), fsa=KVFusion(context))
    finally:
        attn.float()
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)


def test_context_moves_dtype_and_reports_size():
    context = SupportContext(keys={"l": torch.zeros(1, 8, 4)}, values={"l": torch.zeros(1, 8, 4)}, num_shots=2)
    half = context.to(dtype=torch.float16)
    assert half.keys["l"].dtype == torch.float16 and half.num_shots == 2
    assert context.nbytes == 2 * 8 * 4 * 4 and half.nbytes == 2 * 8 * 4 * 2
