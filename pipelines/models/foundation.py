"""The reelfm foundation model: a decoder-only transformer over a member's interaction tokens.

One file, read top to bottom: title embeddings (id + metadata, mixed by a learned age gate, so a
title never trained on still has an embedding; in training a share of titles is embedded from
metadata alone so that path learns to stand in for an id), the token embedding (title, plus its
metadata ungated with ``history_metadata``, + token features + position), pre-norm causal
blocks on ``F.scaled_dot_product_attention``, the objectives (next-title softmax, full or
sampled with logQ correction; multi-token prediction; next-genre BCE), a freshness bias on the
next-title logits by each title's age at the request, and inference (``recommend`` and a KV
cache that appends one event in one step).

Series: an episode's embedding adds a learned embedding of its series, shared by all its
episodes, so continuing a series is one pattern per series rather than one per episode, and a new
season's episodes start from what their series has learnt. The episode that follows one in the
history (and is not in it yet) gets a learned continue-watching bonus: in training over each
window's prefix, at inference over the whole history. ``recommend`` keeps only each series' next
episode (after the furthest one in the history), the unit a member can actually start.

Freshness: how new a title is at the moment of a request is not in any embedding (a title's age
changes every day, and a title released after training has no interactions at all), so the
logits get a learned bias per log2 bucket of (request time - release date). In training the
request time of each position is its target's time (when the member chose), at inference the
time passed to ``recommend`` (default: the newest token's). Only titles young at some request of
the batch are looked up, so the cost is (positions x young titles), not the whole catalogue.

Everything works in title-index space ``0..num_titles-1`` (``token_id - FIRST_TITLE_ID`` of the
tokenizer). Input and output title embeddings are the same tensor, so a cold-start title is both
understood in a history and recommendable. Batches are ``SequenceBatch`` (right-padded, padding
title index -1). The model is a Hugging Face ``PreTrainedModel``: ``save_pretrained`` writes
``config.json`` + ``model.safetensors`` (title metadata buffers included) and ``from_pretrained``
reads them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from pipelines.models.batches import PAD_INDEX, SequenceBatch
from pipelines.models.config import (
    NUM_GAP_BUCKETS,
    NUM_HOURS,
    NUM_WATCH_FRACTION_BUCKETS,
    NUM_WEEKDAYS,
    TOKEN_FEATURES,
    FoundationConfig,
)
from pipelines.models.metadata import NO_SERIES, release_days

FRESHNESS_SCALE = 10.0
"""The freshness bias is stored divided by this: AdamW moves a parameter by about the learning
rate per step whatever its gradient, and a logit bias has to travel units, not hundredths (at
lr 2e-3 a few hundred steps would move it by < 0.5)."""
SERIES_POSITION_COLUMN = 4
"""The episode's place in its series is metadata column ``num_genres + 4``."""
TITLE_BIAS_SCALE = 10.0
"""The title bias is stored divided by this, for the reason of ``FRESHNESS_SCALE``: popularity
spans several logits."""
CONTINUATION_SCALE = 10.0
"""The shared continue-watching bonus is stored divided by this, for the reason of
``FRESHNESS_SCALE``: the generator's bonus is several logits."""
NO_SUCCESSOR = -1
"""``title_successor`` of a film, or of a series' last episode."""
LOSS_CHUNK_ELEMENTS = 1 << 18
"""The full-softmax loss computes its (M, N) logits this many at a time (1 MiB of float32)."""

# ---------------------------------------------------------------------------------------------
# Transformer blocks
# ---------------------------------------------------------------------------------------------


def dropped_keys_mask(
    batch: int, heads: int, length: int, rate: float, device: torch.device
) -> torch.Tensor:
    """(B, H, T, T) boolean attention mask for DropKey: causal, with each earlier key hidden
    from each query independently with probability ``rate``; a token always sees itself, so
    no row of the softmax is empty."""
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    kept = torch.rand(batch, heads, length, length, device=device) >= rate
    return (kept & causal) | torch.eye(length, dtype=torch.bool, device=device)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; with a cache, one new token per row at its own slot."""

    def __init__(self, config: FoundationConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.active_attention_dropout
        self.drop_keys = config.drop_keys
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attend causally; returns (output (B, T, D), keys, values (B, H, T, Dh)).

        With ``cache`` = (keys, values) of shape (B, H, W, Dh), ``x`` holds one token per row
        (T = 1) at position ``lengths`` (B,): its key and value are written into the cache there
        and it attends to cache slots ``0..lengths``.
        """
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x (B, T, D)
        q = q.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, Dh)
        k = k.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, Dh)
        v = v.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, Dh)
        if cache is None and self.training and self.drop_keys and self.dropout > 0:
            mask = dropped_keys_mask(B, self.n_heads, T, self.dropout, x.device)  # (B, H, T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
        elif cache is None:
            # Right padding means no real token ever sees a pad, so causal masking is enough.
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )  # (B, H, T, Dh)
        else:
            cache_k, cache_v = cache  # (B, H, W, Dh) each
            rows = torch.arange(B, device=x.device)
            cache_k[rows, :, lengths] = k[:, :, 0]  # each row writes its own slot
            cache_v[rows, :, lengths] = v[:, :, 0]
            slots = torch.arange(cache_k.shape[2], device=x.device)  # (W,)
            visible = slots[None, :] <= lengths[:, None]  # (B, W)
            y = F.scaled_dot_product_attention(
                q, cache_k, cache_v, attn_mask=visible[:, None, None, :]
            )  # (B, H, 1, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_dropout(self.proj(y)), k, v


class MLP(nn.Module):
    def __init__(self, config: FoundationConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: FoundationConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn_out, k, v = self.attn(self.ln_1(x), cache, lengths)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, k, v


# ---------------------------------------------------------------------------------------------
# Outputs and the inference cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundationOutput:
    """Losses of one batch; the ``hit_at_*`` metrics are filled in eval mode only."""

    loss: torch.Tensor  # () float: weighted sum of the objectives below
    next_title_loss: torch.Tensor  # () float: next-title cross-entropy (full softmax in eval)
    mtp_loss: torch.Tensor | None  # () float: mean over MTP heads with targets; None if off
    genre_loss: torch.Tensor | None  # () float: next-title genre BCE; None if off
    metadata_loss: torch.Tensor | None  # () float: next-title CE from metadata alone; None if off
    hit_at_1: torch.Tensor | None  # () float: share of targets ranked first (eval only)
    hit_at_10: torch.Tensor | None  # () float: share of targets in the top 10 (eval only)

    def metrics(self) -> dict[str, float]:
        """The scalars to log, by name; objectives that are off are absent, never 0."""
        named = {
            "loss": self.loss,
            "next_title_loss": self.next_title_loss,
            "mtp_loss": self.mtp_loss,
            "genre_loss": self.genre_loss,
            "metadata_loss": self.metadata_loss,
            "hit_at_1": self.hit_at_1,
            "hit_at_10": self.hit_at_10,
        }
        return {name: float(value.detach()) for name, value in named.items() if value is not None}


@dataclass
class KVCache:
    """Per-row attention keys/values of a batch of histories, updated in place by ``step``.

    Holds at most ``max_len`` tokens (the model's window); appending to a full row slides the
    window, which with learned absolute positions means recomputing that batch once.
    """

    keys: list[torch.Tensor]  # n_layers x (B, H, W, Dh) float, W = config.max_len
    values: list[torch.Tensor]  # n_layers x (B, H, W, Dh) float
    window: SequenceBatch  # (B, W): the tokens the cache holds, right-padded
    lengths: torch.Tensor  # (B,) int64: tokens held per row
    hidden: torch.Tensor  # (B, D) float: final hidden state of each row's newest token
    seen: torch.Tensor  # (B, N) bool: titles anywhere in the history (for exclude_seen)
    offered: torch.Tensor  # (B, N) bool: successors of the history's episodes (to continue)
    last_times: torch.Tensor | None  # (B,) int64 unix seconds of each row's newest token
    titles: torch.Tensor  # (N, D) float: title embeddings at init_cache (stale if metadata changes)
    title_bias: torch.Tensor | None  # (N,) float: title logit biases at init_cache; None if off


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class FoundationModel(PreTrainedModel):
    """Decoder-only transformer over interaction tokens with cold-start title embeddings.

    Title metadata (``set_title_metadata``) is required when ``config.use_metadata``; the
    metadata row layout is ``config.num_genres`` genre multi-hot columns, then release year,
    runtime, maturity and is-series (see ``pipelines.models.metadata``).
    """

    config_class = FoundationConfig
    base_model_prefix = "foundation"
    main_input_name = "batch"

    def __init__(self, config: FoundationConfig) -> None:
        super().__init__(config)
        D, N = config.d_model, config.num_titles
        self.title_id_embedding = nn.Embedding(N, D)
        self.position_embedding = nn.Embedding(config.max_len, D)
        sizes = {
            "action": config.num_actions,
            "watch_fraction": NUM_WATCH_FRACTION_BUCKETS,
            "gap": NUM_GAP_BUCKETS,
            "device": config.num_devices,
            "hour": NUM_HOURS,
            "weekday": NUM_WEEKDAYS,
        }
        self.feature_embeddings = nn.ModuleDict(
            {name: nn.Embedding(sizes[name], D) for name in config.active_token_features}
        )
        if config.use_metadata:
            self.metadata_proj = nn.Sequential(
                nn.Linear(config.metadata_dim, D), nn.GELU(), nn.Linear(D, D)
            )
            # gate = sigmoid(gate_bias + gate_slope * log1p(age_days)): older titles, with more
            # interactions behind their id embedding, can lean on it more; learned from data.
            self.gate_bias = nn.Parameter(torch.zeros(()))
            self.gate_slope = nn.Parameter(torch.zeros(()))
            if config.history_metadata:
                self.history_metadata = nn.Linear(config.metadata_dim, D)
        if config.title_bias:
            # A trained title's popularity as its own logit bias; a new title's from its metadata
            # (read off the metadata projection's hidden layer), mixed by the same gate.
            self.title_id_bias = nn.Parameter(torch.zeros(N))
            if config.use_metadata:
                self.metadata_bias = nn.Linear(D, 1)
        if config.active_freshness_buckets > 0:
            # One logit bias per age bucket; titles past the last bucket keep 0.
            self.freshness_bias = nn.Parameter(torch.zeros(config.active_freshness_buckets))
            if config.cold_freshness:
                # A second table for titles embedded from metadata alone: an id embedding already
                # holds a young title's pull, a metadata embedding does not.
                self.cold_freshness_bias = nn.Parameter(
                    torch.zeros(config.active_freshness_buckets)
                )
        if config.active_series_embedding and config.num_series > 0:
            self.series_embedding = nn.Embedding(config.num_series, D)
        if config.active_continuation_bonus:
            # bonus = CONTINUATION_SCALE * continuation_bias + hidden state . continuation_weight
            # (plain parameters, not a Linear: they draw no random numbers, so a model without
            # series starts exactly as before they existed)
            self.continuation_bias = nn.Parameter(torch.zeros(()))
            self.continuation_weight = nn.Parameter(torch.zeros(D))
        self.embedding_norm = nn.LayerNorm(D)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(D)
        # Each MTP head maps the final hidden state to a query for the title k+1 steps further.
        self.mtp_heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D)) for _ in range(config.mtp_n)
        )
        if config.genre_weight > 0:
            self.genre_head = nn.Linear(D, config.num_genres)
        # Catalogue buffers, persistent so save_pretrained keeps them with the weights.
        self.register_buffer("title_features", torch.zeros(N, config.metadata_dim))  # (N, F)
        self.register_buffer("title_age_days", torch.zeros(N))  # (N,) age at training cut-off
        self.register_buffer("title_trained", torch.zeros(N, dtype=torch.bool))  # (N,)
        self.register_buffer("title_series", torch.full((N,), NO_SERIES))  # (N,) int64
        # (N,) int64: the episode that follows each one in its series (title_successor)
        self.register_buffer("title_next", torch.full((N,), NO_SUCCESSOR))
        self.register_buffer("has_metadata", torch.zeros((), dtype=torch.bool))  # ()
        # log q(title) of the sampled-softmax proposal; uniform until set_title_popularity.
        self.register_buffer("title_log_q", torch.full((N,), -math.log(N)))  # (N,)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if not isinstance(module, FoundationModel):
            return
        # The extras start as no-ops, so the model starts as its SASRec ablation and each one
        # earns its weight from the data: feature embeddings at zero, the metadata projection's
        # output at zero, and the gate leaning on the id embedding (a title's own interactions
        # say more about it than its genres; 0.5 would halve every id embedding at the start).
        for table in module.feature_embeddings.values():
            init.zeros_(table.weight)
        if module.config.use_metadata:
            init.zeros_(module.metadata_proj[-1].weight)
            init.zeros_(module.metadata_proj[-1].bias)
            gate = module.config.id_gate_init
            init.constant_(module.gate_bias, math.log(gate / (1 - gate)))  # sigmoid^-1(gate)
            init.zeros_(module.gate_slope)
        if module.config.active_freshness_buckets > 0:
            init.zeros_(module.freshness_bias)
            if module.config.cold_freshness:
                init.zeros_(module.cold_freshness_bias)
        if module.config.title_bias:
            init.zeros_(module.title_id_bias)
            if module.config.use_metadata:
                init.zeros_(module.metadata_bias.weight)
                init.zeros_(module.metadata_bias.bias)
        if module.config.active_series_embedding and module.config.num_series > 0:
            init.zeros_(module.series_embedding.weight)
        if module.config.active_continuation_bonus:
            init.zeros_(module.continuation_bias)
            init.zeros_(module.continuation_weight)

    # ----------------------------------------------------------------------------- catalogue

    @property
    def num_titles(self) -> int:
        return self.title_id_embedding.num_embeddings

    @torch.no_grad()
    def set_title_metadata(
        self,
        features: torch.Tensor,
        age_days: torch.Tensor,
        trained_mask: torch.Tensor,
        series: torch.Tensor | None = None,
    ) -> None:
        """Set each title's metadata; a longer catalogue than the model's grows the model.

        ``features`` (N, F) float in the ``config.metadata_dim`` layout, ``age_days`` (N,) float
        title age in days at the training cut-off, ``trained_mask`` (N,) bool: True for titles
        whose id embedding was trained. Untrained titles get a metadata-only embedding. N may
        exceed ``num_titles`` (titles are append-only); grow before building an optimizer.
        ``series`` (N,) int64 series index of each title (``metadata.series_indices``,
        ``NO_SERIES`` for films); None: no title belongs to a series. More series than
        ``config.num_series`` grow the series table (new series start at zero).
        """
        N, F_ = features.shape
        if F_ != self.config.metadata_dim:
            raise ValueError(
                f"metadata has {F_} columns, the model expects {self.config.metadata_dim} "
                f"({self.config.num_genres} genres + scalars)"
            )
        if age_days.shape != (N,) or trained_mask.shape != (N,):
            raise ValueError("age_days and trained_mask must be (N,) like the rows of features")
        if N < self.num_titles:
            raise ValueError(
                f"metadata for {N} titles, the model has {self.num_titles}: titles are "
                "append-only, pass the whole catalogue"
            )
        if series is None:
            series = torch.full((N,), NO_SERIES)
        if series.shape != (N,) or bool((series < NO_SERIES).any()):
            raise ValueError("series must be (N,) int64 series indices, NO_SERIES for films")
        if N > self.num_titles:
            self._grow(N)
        device = self.title_id_embedding.weight.device
        num_series = int(series.max()) + 1 if N > 0 else 0
        if self.config.active_series_embedding and num_series > self.config.num_series:
            self._grow_series(num_series)
        self.title_series = series.to(device=device, dtype=torch.int64)
        self.title_features = features.to(device=device, dtype=torch.float32)
        position = self.title_features[:, self.config.num_genres + SERIES_POSITION_COLUMN]
        self.title_next = title_successor(self.title_series, position)
        self.title_age_days = age_days.to(device=device, dtype=torch.float32)
        self.title_trained = trained_mask.to(device=device, dtype=torch.bool)
        self.has_metadata = torch.ones((), dtype=torch.bool, device=device)

    @torch.no_grad()
    def set_title_popularity(self, counts: torch.Tensor) -> None:
        """Use ``counts`` (N,) (e.g. training interactions per title) as the sampling proposal.

        Counts are smoothed by +1 so every title can be drawn as a negative.
        """
        if counts.shape != (self.num_titles,):
            raise ValueError(f"counts must be ({self.num_titles},), got {tuple(counts.shape)}")
        q = counts.double().clamp(min=0) + 1.0
        self.title_log_q = (q / q.sum()).log().float().to(self.title_log_q.device)

    def _grow(self, num_titles: int) -> None:
        """Append title rows: new id rows get the usual init, new titles the rarest log q."""
        old = self.title_id_embedding.weight
        extra = torch.randn(num_titles - old.shape[0], old.shape[1], device=old.device)
        self.title_id_embedding.weight = nn.Parameter(
            torch.cat([old.data, extra * self.config.initializer_range])
        )
        self.title_id_embedding.num_embeddings = num_titles
        if self.config.title_bias:  # new titles start at 0: their metadata carries them
            extra_bias = old.new_zeros(num_titles - old.shape[0])
            self.title_id_bias = nn.Parameter(torch.cat([self.title_id_bias.data, extra_bias]))
        log_q = torch.cat(
            [self.title_log_q, self.title_log_q.min().expand(num_titles - old.shape[0])]
        )
        self.title_log_q = log_q - torch.logsumexp(log_q, dim=0)
        extra_series = self.title_series.new_full((num_titles - old.shape[0],), NO_SERIES)
        self.title_series = torch.cat([self.title_series, extra_series])
        self.title_next = torch.cat([self.title_next, extra_series.fill_(NO_SUCCESSOR)])
        self.config.num_titles = num_titles

    def _grow_series(self, num_series: int) -> None:
        """Append series rows at zero (the table itself when there was none): a series never
        trained adds nothing to its episodes."""
        D, device = self.config.d_model, self.title_id_embedding.weight.device
        if self.config.num_series == 0:
            self.series_embedding = nn.Embedding(num_series, D, device=device)
            init.zeros_(self.series_embedding.weight)
        else:
            old = self.series_embedding.weight
            extra = old.new_zeros(num_series - old.shape[0], D)
            self.series_embedding.weight = nn.Parameter(torch.cat([old.data, extra]))
            self.series_embedding.num_embeddings = num_series
        self.config.num_series = num_series

    def draw_titles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """How each title is embedded in this call: (warm (N,) bool: with its id embedding,
        with_series (N,) bool: with its series' embedding).

        At inference: the trained titles, and every episode of a series with a trained
        episode. A series none of whose episodes was trained (one released on or after the
        cut-off) has no series embedding, in training either: before its release the series
        is in the catalogue but never chosen, so a row trained then learns only "never
        watched" and buries the series once it is out. In training (id dropout, redrawn every
        call) each title younger than ``config.cold_title_max_age_days`` at the cut-off is
        cold with probability ``config.cold_title_rate``, and so is each young series as a
        whole (every episode young), ids and series embedding alike, so that first episodes
        are learnt without one.
        """
        warm = self.title_trained
        episode = self.title_series != NO_SERIES  # (N,)
        with_series = episode
        series_rows = self.config.active_series_embedding and self.config.num_series > 0
        if series_rows:
            with_series = episode & self._series_of(warm)[self.title_series.clamp(min=0)]
        rate = self.config.cold_title_rate
        # Without metadata every title keeps its id, and no random numbers are drawn.
        if self.training and rate > 0 and self.config.use_metadata:
            young = self.title_age_days < self.config.cold_title_max_age_days  # (N,)
            cold = (torch.rand(warm.shape, device=warm.device) < rate) & young
            if series_rows:
                series = self.title_series.clamp(min=0)  # (N,)
                has_old = self._series_of(~young)  # (S,)
                new_series = (torch.rand(has_old.shape, device=warm.device) < rate) & ~has_old
                whole = episode & new_series[series]  # (N,) episodes of series dropped whole
                cold = cold | whole
                with_series = with_series & ~whole
            warm = warm & ~cold
        return warm, with_series

    def title_table(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every title's embedding (N, D) and logit bias (N,) (None without
        ``config.title_bias``), from one ``draw_titles``."""
        warm, with_series = self.draw_titles()
        return self.title_embeddings(warm, with_series), self.title_bias(warm)

    def _metadata_checked(self) -> None:
        if not bool(self.has_metadata):
            raise RuntimeError(
                "config.use_metadata is on but no title metadata is set: call "
                "model.set_title_metadata(features, age_days, trained_mask) first"
            )

    def _id_gate(self, warm: torch.Tensor) -> torch.Tensor:
        """(N,) weight of each title's id side against its metadata side: sigmoid(a + b *
        log1p(age)) for ``warm`` titles, 0 for the others."""
        gate = torch.sigmoid(self.gate_bias + self.gate_slope * torch.log1p(self.title_age_days))
        return gate * warm

    def _series_of(self, titles: torch.Tensor) -> torch.Tensor:
        """(num_series,) bool: the series with an episode among ``titles`` (N,) bool."""
        found = torch.zeros(self.config.num_series, dtype=torch.bool, device=titles.device)
        found[self.title_series[titles & (self.title_series != NO_SERIES)]] = True
        return found

    def title_embeddings(
        self, warm: torch.Tensor | None = None, with_series: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, D): every title's embedding, input and output alike.

        gate * id_embedding + (1 - gate) * proj(metadata), gate = sigmoid(a + b*log1p(age))
        for ``warm`` titles and 0 for the others, plus the series embedding for the episodes
        ``with_series``; the id embedding alone without metadata. Both default to a fresh
        ``draw_titles()``.
        """
        emb = self.title_id_embedding.weight  # (N, D)
        if not self.config.use_metadata:
            return emb
        self._metadata_checked()
        if warm is None or with_series is None:
            drawn = self.draw_titles()
            warm = drawn[0] if warm is None else warm
            with_series = drawn[1] if with_series is None else with_series
        meta = self.metadata_proj(self.title_features)  # (N, D)
        gate = self._id_gate(warm).unsqueeze(1)  # (N, 1)
        mixed = gate * emb + (1.0 - gate) * meta  # (N, D)
        if not self.config.active_series_embedding or self.config.num_series == 0:
            return mixed
        series = self.series_embedding(self.title_series.clamp(min=0))  # (N, D)
        return mixed + series * with_series.unsqueeze(1)  # (N, D)

    def title_bias(self, warm: torch.Tensor | None = None) -> torch.Tensor | None:
        """(N,) each title's next-title logit bias, None without ``config.title_bias``: its id
        bias and the bias its metadata predicts, mixed like the embeddings (a title not
        ``warm``, by default one untrained, has the metadata's alone). Not redrawn: ``warm``
        defaults to the trained titles."""
        if not self.config.title_bias:
            return None
        bias = TITLE_BIAS_SCALE * self.title_id_bias  # (N,)
        if not self.config.use_metadata:
            return bias
        self._metadata_checked()
        warm = self.title_trained if warm is None else warm
        hidden = self.metadata_proj[:-1](self.title_features)  # (N, D) before the last layer
        meta = TITLE_BIAS_SCALE * self.metadata_bias(hidden)[:, 0]  # (N,)
        gate = self._id_gate(warm)  # (N,)
        return gate * bias + (1.0 - gate) * meta

    # ----------------------------------------------------------------------------- freshness

    def freshness(
        self,
        request_times: torch.Tensor,
        candidates: torch.Tensor | None = None,
        warm: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The freshness bias of titles at requests: (bias (M, C) float, title index).

        ``request_times`` (M,) int64 unix seconds. Without ``candidates`` the columns are the
        titles young at some request (released less than ``freshness_horizon_days`` before
        the earliest one, or later), (C,); every other title's bias is 0. ``candidates`` (C,)
        scores those titles at every request, (M, C) one row of titles per request. With
        ``config.cold_freshness`` titles not ``warm`` (N,) bool (default: the untrained ones)
        read the cold table.
        """
        release = release_days(self.title_features, self.config.num_genres)  # (N,) days
        request = request_times.double() / 86_400.0  # (M,) days since the epoch
        if candidates is None:
            horizon = self.config.freshness_horizon_days
            candidates = torch.nonzero(release > request.min() - horizon).squeeze(1)
        released = release[candidates].double()  # (C,) or (M, C)
        if released.dim() == 1:
            released = released[None, :]  # (1, C)
        age = torch.floor(request[:, None] - released)  # (M, C) whole days
        bucket = torch.where(
            age < 0, 0, 1 + torch.floor(torch.log2(age.clamp(min=0) + 1)).long()
        )  # (M, C)
        old = bucket >= self.config.active_freshness_buckets
        table = FRESHNESS_SCALE * self.freshness_bias  # (buckets,) logit bias per age bucket
        bucket = bucket.clamp(max=self.config.active_freshness_buckets - 1)
        bias = table[bucket]
        if self.config.cold_freshness:
            warm = self.title_trained if warm is None else warm
            cold = ~warm[candidates]  # (C,) or (M, C)
            bias = torch.where(cold, FRESHNESS_SCALE * self.cold_freshness_bias[bucket], bias)
        return bias.masked_fill(old, 0.0), candidates

    def title_logits(
        self,
        query: torch.Tensor,
        titles: torch.Tensor,
        request_times: torch.Tensor | None,
        continuing: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        warm: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(M, N) next-title logits of queries (M, D) over title embeddings (N, D): dot
        products plus the title bias (``bias`` (N,), default ``title_bias()``) when enabled,
        plus the freshness bias at ``request_times`` (M,) when given and enabled, plus the
        continue-watching bonus on ``continuing`` (M, N) bool titles when given and enabled
        (``query`` is then the hidden state the bonus reads). ``warm`` (N,) bool: the titles
        ``titles`` embedded with their ids (default: the trained ones)."""
        logits = query @ titles.T  # (M, N)
        bias = self.title_bias() if bias is None else bias
        if bias is not None:
            logits = logits + bias  # (M, N)
        if continuing is not None and self.config.active_continuation_bonus:
            # logits + bonus * continuing in one pass (the same numbers, one (M, N) less)
            bonus = self.continuation(query)[:, None]  # (M, 1)
            logits = torch.addcmul(logits, bonus, continuing.to(logits.dtype))  # (M, N)
        if request_times is None or self.config.active_freshness_buckets == 0:
            return logits
        fresh, young = self.freshness(request_times, warm=warm)  # (M, Y), (Y,)
        return logits.index_add(1, young, fresh.to(logits.dtype))

    # ----------------------------------------------------------------------------- series

    def continuation(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M,) continue-watching logit bonus of members with final hidden states (M, D)."""
        shared = CONTINUATION_SCALE * self.continuation_bias
        return shared + hidden @ self.continuation_weight  # (M,)

    def continuing(
        self, titles: torch.Tensor, mask: torch.Tensor, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, N) bool: at each position, the titles that continue a series the prefix is in.

        ``titles`` (B, T) title indices with ``mask`` (B, T) marking real tokens. A title
        continues a series at position t when it follows (``title_next``) an episode at or
        before t and is not itself at or before t. With ``select`` (B, T) bool only the selected
        positions, (M, N) in the order of ``tensor[select]``.

        Computed from the tokens, not per title: the successor of the token at j is offered from
        position j until the first position its own title is at, so the cost is (B, T, T) plus
        the (M, N) answer, not a running maximum over (B, T, N).
        """
        B, T = titles.shape
        N = self.num_titles
        following = torch.where(
            mask, self.title_next[titles.clamp(min=0)], NO_SUCCESSOR
        )  # (B, T) successor of each token's title
        t = torch.arange(T, device=titles.device)  # (T,)
        arrives = torch.where(
            (following[:, :, None] == titles[:, None, :]) & mask[:, None, :], t, T
        ).amin(dim=2)  # (B, T): first position holding the successor of token j, T if none
        # offered[b, t, j]: the successor of token j continues at t, j <= t < arrives[b, j]
        offered = (t[:, None] >= t[None, :]) & (t[:, None] < arrives[:, None, :])  # (B, T, T)
        offered = offered & (following >= 0)[:, None, :]
        columns = torch.where(offered, following[:, None, :], N)  # (B, T, T); N: nothing
        columns = columns.reshape(B * T, T) if select is None else columns[select]  # (M, T)
        out = torch.zeros(len(columns), N + 1, dtype=torch.bool, device=titles.device)
        out.scatter_(1, columns, True)  # (M, N + 1)
        out = out[:, :N]
        return out.view(B, T, N) if select is None else out

    def unservable(self, continuing: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(M, N) bool: the episodes ``recommend`` would not offer at each of M positions, so
        training ranks the titles serving ranks (``config.next_episode_only``): every episode
        except a series' first one and those ``continuing`` (M, N) the member's series; never
        a position's own ``target`` (M,) (a member may skip ahead). Without it the softmax
        spends itself pushing down episodes no one can start, and a new series' first episode,
        embedded from metadata like its siblings, is pushed down with them."""
        N = self.num_titles
        episode = self.title_series != NO_SERIES  # (N,)
        following = torch.where(self.title_next >= 0, self.title_next, N)  # (N,)
        has_previous = torch.zeros(N + 1, dtype=torch.bool, device=episode.device)
        has_previous[following] = True
        blocked = (episode & has_previous[:N])[None, :] & ~continuing  # (M, N)
        blocked[torch.arange(len(target), device=target.device), target] = False
        return blocked

    # ----------------------------------------------------------------------------- backbone

    def _embed(
        self, batch: SequenceBatch, positions: torch.Tensor, titles: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, D) input representations: title + features + position, normalised."""
        rows = batch.titles.clamp(min=0)  # (B, T); pads read row 0, never attended
        x = titles[rows]  # (B, T, D)
        if self.config.use_metadata and self.config.history_metadata:
            # Only the history's rows: a cached step appends one token, not the catalogue.
            x = x + self.history_metadata(self.title_features[rows])  # (B, T, D)
        columns = dict(zip(TOKEN_FEATURES, batch.feature_tensors(), strict=True))
        for name, table in self.feature_embeddings.items():
            x = x + table(columns[name])  # (B, T, D)
        x = x + self.position_embedding(positions)  # (B, T, D)
        return self.embedding_dropout(self.embedding_norm(x))

    def _positions(self, batch: SequenceBatch) -> torch.Tensor:
        T = batch.titles.shape[1]
        if T > self.config.max_len:
            raise ValueError(
                f"sequences of {T} tokens exceed max_len={self.config.max_len}: cut them into "
                "windows (pipelines.models.windows) or pass batch.latest(max_len)"
            )
        return torch.arange(T, device=batch.titles.device).expand_as(batch.titles)  # (B, T)

    def hidden_states(
        self, batch: SequenceBatch, titles: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, D) final hidden state of every position (pads included, meaningless)."""
        titles = self.title_embeddings() if titles is None else titles
        x = self._embed(batch, self._positions(batch), titles)  # (B, T, D)
        for block in self.blocks:
            x, _, _ = block(x)
        return self.final_norm(x)

    # ----------------------------------------------------------------------------- objectives

    def forward(self, batch: SequenceBatch) -> FoundationOutput:
        """Pretraining losses of a batch with ``targets``; eval mode adds hit-rate metrics.

        The freshness bias applies at each target's time when ``batch.target_times`` is given.
        """
        if batch.targets is None:
            raise ValueError("forward computes losses and needs batch.targets; use recommend()")
        warm, with_series = self.draw_titles()  # (N,) each: how titles are embedded this step
        titles = self.title_embeddings(warm, with_series)  # (N, D)
        bias = self.title_bias(warm)  # (N,) or None
        h = self.hidden_states(batch, titles)  # (B, T, D)
        valid = batch.targets != PAD_INDEX  # (B, T)
        if not bool(valid.any()):
            raise ValueError("the batch has no targets (every target is PAD_INDEX)")
        if self.config.skip_repeat_targets:
            new = valid & ~repeated_targets(batch.titles, batch.mask, batch.targets)
            valid = new if bool(new.any()) else valid
        h_valid = h[valid]  # (M, D)
        target = batch.targets[valid]  # (M,)
        times = batch.target_times
        when = None if times is None else times[valid]  # (M,) request time of each target

        continuing = blocked = None
        series_rules = self.config.active_continuation_bonus or self.config.active_next_episode_only
        if series_rules and bool((self.title_next >= 0).any()):
            continuing = self.continuing(batch.titles, batch.mask, valid)  # (M, N)
            if self.config.active_next_episode_only and self.config.train_servable_only:
                blocked = self.unservable(continuing, target)  # (M, N)

        hit_at_1 = hit_at_10 = None
        if self.training:
            next_title_loss = self._title_loss(
                h_valid, target, titles, when, continuing, bias, warm, blocked
            )
        else:
            # Evaluation always scores the whole catalogue, so runs with and without sampled
            # softmax report comparable numbers.
            logits = self._servable_logits(h_valid, titles, when, continuing, bias, warm, blocked)
            next_title_loss = F.cross_entropy(logits, target)
            target_logit = logits.gather(1, target[:, None])  # (M, 1)
            rank = (logits > target_logit).sum(dim=1)  # (M,) titles scored strictly higher
            hit_at_1 = (rank < 1).float().mean()
            hit_at_10 = (rank < 10).float().mean()
        loss = next_title_loss

        mtp_loss = None
        if self.config.mtp_n > 0:
            head_losses = []
            for k, head in enumerate(self.mtp_heads, start=1):
                # Position t's target k steps later is the next-title target of position t+k.
                later = batch.targets[:, k:]  # (B, T-k)
                mask = later != PAD_INDEX
                if bool(mask.any()):
                    query = head(h[:, : later.shape[1]][mask])  # (M_k, D)
                    later_when = None if times is None else times[:, k:][mask]  # (M_k,)
                    head_losses.append(
                        self._title_loss(query, later[mask], titles, later_when, None, bias, warm)
                    )
            if head_losses:
                mtp_loss = torch.stack(head_losses).mean()
                loss = loss + self.config.mtp_weight * mtp_loss

        genre_loss = None
        if self.config.genre_weight > 0:
            genre_logits = self.genre_head(h_valid)  # (M, G)
            genre_labels = self.title_features[target, : self.config.num_genres]  # (M, G)
            genre_loss = F.binary_cross_entropy_with_logits(genre_logits, genre_labels)
            loss = loss + self.config.genre_weight * genre_loss

        metadata_loss = None
        if self.config.metadata_loss_weight > 0 and self.config.use_metadata:
            # Every title as if new: embedded (and biased) from its metadata alone.
            cold = torch.zeros_like(self.title_trained)
            cold_titles, cold_bias = self.title_embeddings(cold, cold), self.title_bias(cold)
            metadata_loss = self._title_loss(
                h_valid, target, cold_titles, when, continuing, cold_bias, cold, blocked
            )
            loss = loss + self.config.metadata_loss_weight * metadata_loss

        return FoundationOutput(
            loss, next_title_loss, mtp_loss, genre_loss, metadata_loss, hit_at_1, hit_at_10
        )

    def _servable_logits(
        self,
        query: torch.Tensor,
        titles: torch.Tensor,
        request_times: torch.Tensor | None,
        continuing: torch.Tensor | None,
        bias: torch.Tensor | None,
        warm: torch.Tensor | None,
        blocked: torch.Tensor | None,
    ) -> torch.Tensor:
        """(M, N) ``title_logits`` with the ``blocked`` (M, N) titles (``unservable``) at -inf."""
        logits = self.title_logits(query, titles, request_times, continuing, bias, warm)
        return logits if blocked is None else logits.masked_fill(blocked, float("-inf"))

    def _title_loss(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        titles: torch.Tensor,
        request_times: torch.Tensor | None,
        continuing: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        warm: torch.Tensor | None = None,
        blocked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of ``target`` (M,) given queries (M, D) over title embeddings (N, D),
        with the title bias ``bias`` (N,) when enabled, the freshness bias at ``request_times``
        (M,) when given and the continue-watching bonus on ``continuing`` (M, N) when given;
        ``blocked`` (M, N) titles are left out of each row's softmax. The full softmax applies
        ``label_smoothing`` over the titles each row scores.

        Full softmax, or with ``num_sampled_negatives`` S > 0 a sampled softmax: S shared
        negatives drawn from q = exp(title_log_q), each negative logit corrected by -log(S q)
        (the logQ correction; Bengio & Senecal 2008, Yi et al. 2019) so that the negatives'
        summed exp is an unbiased estimate of the rest of the catalogue's partition function.
        Negatives equal to a row's target ("accidental hits") are masked, and the positive keeps
        its raw logit, so the loss estimates the full-softmax loss itself, not a shifted one.
        """
        S = self.config.num_sampled_negatives
        smoothing = self.config.label_smoothing
        if S == 0:
            # In row chunks of LOSS_CHUNK_ELEMENTS logits: one (M, N) block is tens of MB, which
            # the allocator maps afresh for each of the softmax's passes and no cache holds.
            # The same sum, and a demo-sized CPU step 1.28x faster.
            rows = max(1, LOSS_CHUNK_ELEMENTS // self.num_titles)
            total = query.new_zeros(())
            for start in range(0, len(target), rows):
                part = slice(start, start + rows)
                logits = self._servable_logits(
                    query[part],
                    titles,
                    _part(request_times, part),
                    _part(continuing, part),
                    bias,
                    warm,
                    _part(blocked, part),
                )
                scored = None if blocked is None else ~blocked[part]
                total = (
                    total + smoothed_cross_entropy(logits, target[part], smoothing, scored).sum()
                )
            return total / len(target)
        bias = self.title_bias() if bias is None else bias
        negatives = torch.multinomial(self.title_log_q.exp(), S, replacement=True)  # (S,)
        positive = (query * titles[target]).sum(dim=1)  # (M,)
        negative = query @ titles[negatives].T - (
            math.log(S) + self.title_log_q[negatives]
        )  # (M, S)
        if bias is not None:
            positive = positive + bias[target]
            negative = negative + bias[negatives]
        if request_times is not None and self.config.active_freshness_buckets > 0:
            positive = positive + self.freshness(request_times, target[:, None], warm)[0][:, 0]
            negative = negative + self.freshness(request_times, negatives, warm)[0]
        if continuing is not None and self.config.active_continuation_bonus:
            bonus = self.continuation(query)  # (M,)
            positive = positive + bonus * continuing.gather(1, target[:, None])[:, 0]
            negative = negative + bonus[:, None] * continuing[:, negatives]
        negative = negative.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
        if blocked is not None:
            negative = negative.masked_fill(blocked[:, negatives], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)  # (M, 1 + S)
        return F.cross_entropy(logits, torch.zeros_like(target))

    # ----------------------------------------------------------------------------- inference

    def _seen(self, history: SequenceBatch) -> torch.Tensor:
        """(B, N) bool: titles anywhere in each row's history."""
        seen = torch.zeros(
            len(history), self.num_titles + 1, dtype=torch.bool, device=history.titles.device
        )  # (B, N + 1); column N catches pads
        titles = torch.where(history.mask, history.titles, self.num_titles)  # (B, T)
        seen.scatter_(1, titles, True)
        return seen[:, : self.num_titles]

    def _offered(self, history: SequenceBatch) -> torch.Tensor:
        """(B, N) bool: the episodes that follow an episode of each row's history."""
        following = torch.where(
            history.mask, self.title_next[history.titles.clamp(min=0)], NO_SUCCESSOR
        )  # (B, T)
        offered = torch.zeros(
            len(history), self.num_titles + 1, dtype=torch.bool, device=history.titles.device
        )  # (B, N + 1); column N catches pads and titles without a successor
        offered.scatter_(1, torch.where(following >= 0, following, self.num_titles), True)
        return offered[:, : self.num_titles]

    def beyond_next_episode(self, seen: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: episodes after each row's next one in their series.

        A row's next episode of a series is the first (by series position) after the furthest
        one in its history, ``seen`` (B, N), whatever the action (an episode shown to or listed
        by the member counts, as ``exclude_seen`` removes it too), or the series' first episode
        when the history has none. Episodes with the same position (a catalogue that does not
        number them) are never past it.
        """
        series = self.title_series  # (N,)
        episode = series != NO_SERIES  # (N,)
        B = seen.shape[0]
        if not bool(episode.any()):
            return torch.zeros_like(seen)
        position = self.title_features[:, self.config.num_genres + SERIES_POSITION_COLUMN]
        column = series.clamp(min=0).expand(B, -1)  # (B, N) series of each title
        S = int(series.max()) + 1
        inf = torch.tensor(float("inf"), device=seen.device)
        furthest = torch.full((B, S), -inf, device=seen.device).scatter_reduce(
            1, column, torch.where(seen & episode, position, -inf), "amax"
        )  # (B, S) position of the furthest episode seen, -inf if none
        ahead = episode & (position > furthest.gather(1, column))  # (B, N)
        following = torch.full((B, S), inf, device=seen.device).scatter_reduce(
            1, column, torch.where(ahead, position, inf), "amin"
        )  # (B, S) position of the next episode
        return episode & (position > following.gather(1, column))  # (B, N)

    def _top_k(
        self,
        hidden: torch.Tensor,
        seen: torch.Tensor,
        offered: torch.Tensor,
        k: int,
        exclude_seen: bool,
        titles: torch.Tensor,
        bias: torch.Tensor | None,
        request_times: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        continuing = offered & ~seen  # (B, N)
        scores = self.title_logits(hidden, titles, request_times, continuing, bias)  # (B, N)
        if exclude_seen:
            scores = scores.masked_fill(seen, float("-inf"))
        if self.config.active_next_episode_only:
            scores = scores.masked_fill(self.beyond_next_episode(seen), float("-inf"))
        top = scores.topk(min(k, self.num_titles), dim=1)
        return top.indices, top.values

    def _check_history(self, history: SequenceBatch) -> None:
        if bool((history.lengths == 0).any()):
            raise ValueError("every history needs at least one token; cold members have none")
        if self.training:
            raise RuntimeError("inference runs in eval mode: call model.eval() first")

    @torch.no_grad()
    def recommend(
        self,
        history: SequenceBatch,
        k: int,
        exclude_seen: bool = True,
        request_times: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k titles after each history: (ids (B, k) int64 title index, scores (B, k)).

        Scores come from each row's latest ``max_len`` tokens; ``exclude_seen`` removes every
        title anywhere in the passed history, and ``config.next_episode_only`` every episode
        after a series' next one (-inf scores). Rows may be longer than the window.
        ``request_times`` (B,) int64 unix seconds of the requests (default: each row's newest
        token time) set each title's freshness; a history without times and no request times
        is scored without freshness.
        """
        self._check_history(history)
        window = history.latest(self.config.max_len)  # (B, W)
        titles, bias = self.title_table()  # (N, D), (N,) or None
        h = self.hidden_states(window, titles)  # (B, W, D)
        rows = torch.arange(len(window), device=h.device)
        last = h[rows, window.lengths - 1]  # (B, D)
        when = history.last_times if request_times is None else request_times
        seen, offered = self._seen(history), self._offered(history)
        return self._top_k(last, seen, offered, k, exclude_seen, titles, bias, when)

    @torch.no_grad()
    def init_cache(self, history: SequenceBatch) -> KVCache:
        """Run each history's latest window once and keep its keys and values."""
        self._check_history(history)
        window = history.latest(self.config.max_len)  # (B, T)
        seen, offered = self._seen(history), self._offered(history)
        return self._prefill(window, seen, offered, *self.title_table())

    def _prefill(
        self,
        window: SequenceBatch,
        seen: torch.Tensor,
        offered: torch.Tensor,
        titles: torch.Tensor,
        title_bias: torch.Tensor | None,
    ) -> KVCache:
        B, T = window.titles.shape
        W, H, Dh = self.config.max_len, self.config.n_heads, self.config.head_dim
        x = self._embed(window, self._positions(window), titles)  # (B, T, D)
        keys, values = [], []
        for block in self.blocks:
            x, k, v = block(x)  # k, v: (B, H, T, Dh)
            cache_k = x.new_zeros(B, H, W, Dh)  # (B, H, W, Dh)
            cache_v = x.new_zeros(B, H, W, Dh)
            cache_k[:, :, :T] = k
            cache_v[:, :, :T] = v
            keys.append(cache_k)
            values.append(cache_v)
        h = self.final_norm(x)  # (B, T, D)
        lengths = window.lengths  # (B,)
        hidden = h[torch.arange(B, device=h.device), lengths - 1]  # (B, D)
        padded = _pad_to(window, W)
        return KVCache(
            keys,
            values,
            padded,
            lengths,
            hidden,
            seen,
            offered,
            window.last_times,
            titles,
            title_bias,
        )

    @torch.no_grad()
    def step(self, cache: KVCache, token: SequenceBatch) -> KVCache:
        """Append one token per row, (B, 1), to ``cache``; one forward step, in place.

        A row whose cache is full slides its window by one, which recomputes the batch once.
        """
        if token.titles.shape != (len(cache.window), 1) or not bool(token.mask.all()):
            raise ValueError("step takes exactly one real token per cached row, shape (B, 1)")
        if (token.times is None) != (cache.window.times is None):
            raise ValueError("the token and the cached history must both carry times, or neither")
        cache.seen[torch.arange(len(token), device=cache.seen.device), token.titles[:, 0]] = True
        cache.offered |= self._offered(token)
        W = self.config.max_len
        if bool((cache.lengths >= W).any()):
            slid = _append(cache.window, cache.lengths, token).latest(W)  # (B, W)
            return self._prefill(slid, cache.seen, cache.offered, cache.titles, cache.title_bias)
        positions = cache.lengths[:, None]  # (B, 1)
        x = self._embed(token, positions, cache.titles)  # (B, 1, D)
        for block, cache_k, cache_v in zip(self.blocks, cache.keys, cache.values, strict=True):
            x, _, _ = block(x, (cache_k, cache_v), cache.lengths)
        cache.hidden = self.final_norm(x)[:, 0]  # (B, D)
        cache.window = _append(cache.window, cache.lengths, token).latest(W)  # (B, W)
        cache.lengths = cache.lengths + 1
        cache.last_times = None if token.times is None else token.times[:, 0]
        return cache

    @torch.no_grad()
    def recommend_cached(
        self,
        cache: KVCache,
        k: int,
        exclude_seen: bool = True,
        request_times: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``recommend`` for the histories a cache holds: (ids (B, k), scores (B, k)), with the
        same ``request_times`` default (each row's newest token time)."""
        when = cache.last_times if request_times is None else request_times
        return self._top_k(
            cache.hidden,
            cache.seen,
            cache.offered,
            k,
            exclude_seen,
            cache.titles,
            cache.title_bias,
            when,
        )


def repeated_targets(
    titles: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(B, T) bool: position t's target is a title among the real tokens at 0..t."""
    T = titles.shape[1]
    t = torch.arange(T, device=titles.device)
    earlier = (t[None, :] <= t[:, None])[None] & mask[:, None, :]  # (B, T, T): j <= t, real
    return ((titles[:, None, :] == targets[:, :, None]) & earlier).any(dim=2)


def title_successor(series: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """(N,) int64: the title index of the episode after each one in its series, by ``position``
    (N,) within ``series`` (N,) (``NO_SERIES`` for films); ``NO_SUCCESSOR`` for films, a
    series' last episode, and episodes sharing their position with the next (unnumbered)."""
    successor = torch.full_like(series, NO_SUCCESSOR)
    episodes = torch.nonzero(series != NO_SERIES).squeeze(1)  # (E,)
    if len(episodes) < 2:
        return successor
    # Sort by series, then position: a stable sort on position, then on series.
    by_position = episodes[torch.sort(position[episodes], stable=True).indices]
    ordered = by_position[torch.sort(series[by_position], stable=True).indices]  # (E,)
    current, following = ordered[:-1], ordered[1:]
    linked = (series[current] == series[following]) & (position[current] < position[following])
    successor[current[linked]] = following[linked]
    return successor


def smoothed_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    smoothing: float = 0.0,
    scored: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M,) cross-entropy of ``target`` under ``logits`` (M, N), with label smoothing: a
    share ``smoothing`` of each row's target mass spread evenly over the titles the row
    scores, ``scored`` (M, N) bool (None: every title). Pass ``scored`` whenever titles are
    left out of a row's softmax (at -inf): they get none of the mass, where PyTorch's own
    smoothing (``scored`` None) would give them some, and an infinite loss."""
    if scored is None or smoothing == 0:  # PyTorch's smoothing is over every title (faster)
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    uniform = -log_p.masked_fill(~scored, 0.0).sum(dim=1) / scored.sum(dim=1)
    return (1.0 - smoothing) * nll + smoothing * uniform


def _part(rows: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if rows is None else rows[part]


def _pad_to(batch: SequenceBatch, width: int) -> SequenceBatch:
    """Right-pad every column of ``batch`` to ``width`` positions."""
    extra = width - batch.titles.shape[1]

    def pad(column: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(column, (0, extra), value=value)

    times = None if batch.times is None else pad(batch.times, 0)
    return SequenceBatch(
        titles=pad(batch.titles, PAD_INDEX),
        actions=pad(batch.actions, 0),
        watch_fraction=pad(batch.watch_fraction, 0),
        gaps=pad(batch.gaps, 0),
        devices=pad(batch.devices, 0),
        hours=pad(batch.hours, 0),
        weekdays=pad(batch.weekdays, 0),
        times=times,
    )


def _append(window: SequenceBatch, lengths: torch.Tensor, token: SequenceBatch) -> SequenceBatch:
    """``window`` (B, W) with each row's ``token`` (B, 1) written after its last real token.

    The result is one column wider so a full row has room; callers trim with ``latest``.
    """
    wide = _pad_to(window, window.titles.shape[1] + 1)
    rows = torch.arange(len(window), device=lengths.device)

    def put(column: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        column = column.clone()
        column[rows, lengths] = value[:, 0]
        return column

    return SequenceBatch(
        titles=put(wide.titles, token.titles),
        actions=put(wide.actions, token.actions),
        watch_fraction=put(wide.watch_fraction, token.watch_fraction),
        gaps=put(wide.gaps, token.gaps),
        devices=put(wide.devices, token.devices),
        hours=put(wide.hours, token.hours),
        weekdays=put(wide.weekdays, token.weekdays),
        times=None if token.times is None else put(wide.times, token.times),
    )


def pretraining_loss(
    model: nn.Module, batch: SequenceBatch
) -> tuple[torch.Tensor, dict[str, float]]:
    """The shared training loop's loss for pretraining: the model's own objectives.

    ``model`` may be a ``FoundationModel`` or its DDP wrapper; calling it (not a method) keeps
    DDP's gradient synchronisation in the path.
    """
    output: FoundationOutput = model(batch)
    return output.loss, output.metrics()
