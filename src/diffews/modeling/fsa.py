"""KV-fusion self-attention (FSA): where query tokens attend to the support images.

Every self-attention layer (`attn1`) of every transformer block gets a `KVFusionAttnProcessor`.
What it does depends on the *exchange* handed to the UNet call through
``cross_attention_kwargs={"fsa": exchange}``:

- `KVRecorder` (support pass): each support image attends to itself only, as in plain
  self-attention, and the layer's key/value projections are recorded.
- `KVFusion` (query pass): the query's keys/values are concatenated on the token axis with the
  recorded support keys/values, ``[query, shot 1, ..., shot K]``, so the query attends over
  ``L * (K + 1)`` tokens with the pretrained projections and scale. No new weights.
- no exchange: plain self-attention.

The per-layer support keys/values are a pure function of the support set, so `SupportContext`
holds them for reuse across any number of queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

FSA_KWARG = "fsa"


@dataclass(frozen=True)
class SupportContext:
    """Per-layer keys and values of one or more encoded support sets.

    Attributes:
        keys: FSA layer name -> ``(S, K * L, C)`` tensor, where S is the number of support sets,
            K the shots per set, L the layer's tokens per image and C its width.
        values: same layout as `keys`.
        num_shots: K.

    A context of S sets serves a query batch of B = S x m images in blocks, set s the queries
    s*m ... s*m + m - 1: S = 1 is shared by every query, S = B pairs set b with query b (training
    episodes), and S classes' sets serve their m queries each (several classes at once). A set is
    broadcast to its queries, never copied.
    """

    keys: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    num_shots: int

    @property
    def num_sets(self) -> int:
        """S, the number of support sets held."""
        return next(iter(self.keys.values())).shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the cached keys and values, in bytes."""
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())

    def shots(self) -> list[SupportContext]:
        """The K one-shot contexts this one joins (each set's shot k alone), as views: no copy."""

        def shot(tensors: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
            return {name: t.unflatten(1, (self.num_shots, -1))[:, k] for name, t in tensors.items()}

        return [SupportContext(shot(self.keys, k), shot(self.values, k), 1) for k in range(self.num_shots)]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SupportContext:
        """Copy of the context on another device and/or dtype."""

        def move(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {name: t.to(device=device, dtype=dtype) for name, t in tensors.items()}

        return SupportContext(move(self.keys), move(self.values), self.num_shots)


class KVExchange(Protocol):
    """What an FSA layer does with its own keys/values: ``(layer, key, value) -> (key, value)``."""

    def __call__(self, layer: str, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class KVRecorder:
    """Support-pass exchange: records each layer's keys/values and leaves attention unchanged.

    The support pass batches ``S * K`` images ordered set by set (shots of a set contiguous).
    """

    def __init__(self, num_shots: int) -> None:
        self.num_shots = num_shots
        self._keys: dict[str, torch.Tensor] = {}
        self._values: dict[str, torch.Tensor] = {}

    def __call__(self, layer: str, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._keys[layer] = key
        self._values[layer] = value
        return key, value

    def context(self) -> SupportContext:
        """The recorded keys/values, shots of each set joined on the token axis."""
        if not self._keys:
            raise RuntimeError("no FSA layer ran: is KV-fusion attention installed on this UNet?")

        def join_shots(t: torch.Tensor) -> torch.Tensor:
            images, tokens, width = t.shape
            return t.reshape(images // self.num_shots, self.num_shots * tokens, width)

        return SupportContext(
            keys={name: join_shots(t) for name, t in self._keys.items()},
            values={name: join_shots(t) for name, t in self._values.items()},
            num_shots=self.num_shots,
        )


class KVFusion:
    """Query-pass exchange: appends the support keys/values to the query's own."""

    def __init__(self, context: SupportContext) -> None:
        self.context = context

    def __call__(self, layer: str, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._fuse(key, self.context.keys[layer]), self._fuse(value, self.context.values[layer])

    def _fuse(self, own: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        batch, tokens = own.shape[:2]
        if support.shape[1] != tokens * self.context.num_shots:
            raise ValueError(
                f"support context holds {support.shape[1] // self.context.num_shots} tokens per shot at a layer where "
                f"the query has {tokens}: supports and queries must be encoded at the same working resolution"
            )
        sets = support.shape[0]
        if batch % sets:
            raise ValueError(
                f"support context holds {sets} support sets but the query batch has {batch} images; "
                "use one support set for all queries, one per query, or one per equal block of queries"
            )
        per_set = batch // sets
        blocks = own.unflatten(0, (sets, per_set))
        shared = support.to(own.dtype)[:, None].expand(-1, per_set, -1, -1)
        return torch.cat([blocks, shared], dim=2).flatten(0, 1)


class KVFusionAttnProcessor:
    """Self-attention processor that lets a `KVExchange` extend the keys and values (SDPA)."""

    def __init__(self, layer: str) -> None:
        self.layer = layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        fsa: KVExchange | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.layer}: KV-fusion attention is self-attention without an attention mask")
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if fsa is not None:
            key, value = fsa(self.layer, key, value)

        head_dim = query.shape[-1] // attn.heads

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value), scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class CrossAttnProcessor(AttnProcessor2_0):
    """Stock SDPA cross-attention that accepts the `fsa` keyword the UNet hands to every attention layer.

    Text cross-attention is untouched by DiffewS; this subclass only keeps diffusers from warning
    about a keyword meant for the self-attention layers.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        fsa: KVExchange | None = None,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


_PROCESSOR_SUFFIX = ".processor"


def install_fsa(unet: torch.nn.Module) -> list[str]:
    """Install KV-fusion attention on every `attn1` of `unet`; returns the FSA layer names.

    Raises:
        ValueError: if the UNet has no self-attention layers, or one uses a feature
            (group/spatial norm, q/k norms) that DiffewS's processor does not implement.
    """
    processors: dict[str, object] = {}
    fsa_layers: list[str] = []
    for key in unet.attn_processors:
        layer = key[: -len(_PROCESSOR_SUFFIX)]
        if layer.endswith("attn1"):
            attn = unet.get_submodule(layer)
            unsupported = [n for n in ("group_norm", "spatial_norm", "norm_q", "norm_k") if getattr(attn, n) is not None]
            if unsupported:
                raise ValueError(f"{layer}: KV-fusion attention does not support {', '.join(unsupported)}")
            processors[key] = KVFusionAttnProcessor(layer)
            fsa_layers.append(layer)
        else:
            processors[key] = CrossAttnProcessor()
    if not fsa_layers:
        raise ValueError("this UNet has no transformer self-attention (attn1) layers to fuse")
    unet.set_attn_processor(processors)
    return fsa_layers
