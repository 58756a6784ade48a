"""The foundation model's configuration, and the named size presets (tiny, demo, benchmark).

``FoundationConfig`` is a Hugging Face ``PreTrainedConfig`` (transformers v5 configs are typed
dataclasses), so it is written to and read from ``config.json`` beside ``model.safetensors``.
Every architecture, objective and ablation switch lives here once; the "SASRec ablation" is this
config with ``use_token_features``, ``use_metadata``, ``freshness_buckets``, ``mtp_n`` and
``genre_weight`` turned off (which also turns off the series embedding, the continuation
bonus and the next-episode rule: they read the metadata), not a second model. Presets are plain data: a name maps onto a
handful of size fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from transformers import PretrainedConfig

from pipelines.schemas import ACTIONS, DEVICES

NUM_WATCH_FRACTION_BUCKETS = 6
"""``watch_fraction_bucket`` takes values 0..5."""
NUM_GAP_BUCKETS = 16
"""``gap_bucket`` (log-scale time since the previous token) takes values 0..15."""
NUM_HOURS = 24
NUM_WEEKDAYS = 7
TOKEN_FEATURES: tuple[str, ...] = ("action", "watch_fraction", "gap", "device", "hour", "weekday")
"""Token feature names, in ``SequenceBatch.feature_tensors()`` order."""
NUM_SCALAR_METADATA = 5
"""Metadata columns after the genre multi-hot: release date, runtime, maturity, is-series, and
the episode's place in its series."""


class FoundationConfig(PretrainedConfig):
    """Shape, objectives and ablation switches of ``FoundationModel``.

    ``num_titles`` and ``num_genres`` describe the catalogue the weights were built for; the
    model grows ``num_titles`` itself when ``set_title_metadata`` is given a longer catalogue.
    """

    model_type = "reelfm-foundation"

    # --- catalogue -------------------------------------------------------------------------
    num_titles: int = 100  # rows of the title tables, title index 0..num_titles-1 (token id - 64)
    num_genres: int = 8  # width of the genre multi-hot: the first num_genres metadata columns
    genres: list[str] | None = None  # genre name of each multi-hot column, to rebuild metadata
    num_actions: int = len(ACTIONS)  # action ids index schemas.ACTIONS
    num_devices: int = len(DEVICES)  # device ids index schemas.DEVICES ("unknown" for nulls)

    # --- backbone --------------------------------------------------------------------------
    d_model: int = 64  # width of every token representation
    n_layers: int = 2  # pre-norm transformer blocks
    n_heads: int = 2  # attention heads; d_model must divide by it
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    max_len: int = 50  # window length: positions the model attends over (learned positions)
    dropout: float = 0.1  # on embeddings, attention output and MLP output while training
    # On the attention weights while training; None: ``dropout``. Its mask is (B, H, T, T) and
    # makes PyTorch's CPU attention leave its fused kernel for the unfused one.
    attention_dropout: float | None = None
    # Where that dropout falls: False drops attention weights after the softmax; True hides
    # keys before it (DropKey, Li et al., CVPR 2023: each earlier key is hidden from each query
    # with that probability and the softmax renormalises over the rest). Hidden keys are a
    # boolean attention mask, which the fused CPU kernel takes; weight dropout is not. Same
    # validation NDCG@10 as weight dropout on the demo (three days, four seeds), 1.13x the
    # tokens/s on full 200-token windows, little gain on the demo's short length-grouped ones.
    drop_keys: bool = False
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights

    # --- data ------------------------------------------------------------------------------
    window_stride: int = 25  # training windows start every window_stride tokens of a history

    # --- inputs (ablation switches) --------------------------------------------------------
    use_token_features: bool = True  # add action/watch/gap/device/hour/weekday embeddings
    # The features the data actually has (None: all of TOKEN_FEATURES). A feature that is the
    # same on every token only adds a bias, which AdamW grows until it drowns the title.
    token_features: list[str] | None = None
    use_metadata: bool = True  # mix title metadata into title embeddings (cold start)
    id_gate_init: float = 0.9  # initial weight of a trained title's id embedding vs. metadata
    # History tokens also add a linear projection of their title's metadata, ungated, so the
    # member's state reads the genres of what they watched at full strength (through the gate
    # metadata is a tenth of a trained title's embedding). On the demo's validation days,
    # seeds paired: +0.0025 / +0.0051 / +0.0037 NDCG@10 on 2026-01-05 and +0.0061 / +0.0038 on
    # 2026-01-06. Off here so configs saved before it load as trained; new models get it
    # (NEW_MODEL_DEFAULTS).
    history_metadata: bool = False
    # A target title already among the window's tokens before it (an episode resumed, a film
    # shown again) is not a training target: recommend (exclude_seen) and both evaluation
    # protocols rank only titles new to the member, and repeats taught the state to predict
    # the member's own history (next episodes 0.91-0.93 -> 0.95 NDCG@10 on the demo's 2026-01-06,
    # overall +0.0074, seeds 0-3). A batch of repeats alone keeps them rather than train on
    # nothing. Leave-one-out MovieLens has no repeats. New models get it (NEW_MODEL_DEFAULTS).
    skip_repeat_targets: bool = False
    # Share of the young trained titles that, in each training step, are embedded from metadata
    # alone (as if untrained), so the metadata path and the freshness bias learn to carry a new
    # title: one released after training has nothing else (id dropout, as in DropoutNet). A
    # series whose episodes are all young is also hidden whole at that rate, series embedding
    # included: a series released after training has no trained series embedding. Young:
    # released less than cold_title_max_age_days before the cut-off, the titles most like a new
    # one. On the demo's validation day (cold-start recall@50, equal NDCG@10): 0.06 at rate
    # 0.1, 0.30 at 0.5, 0.33 at 0.9.
    cold_title_rate: float = 0.5
    cold_title_max_age_days: float = 128.0
    # Freshness: a learned logit bias by the title's age at the request (request time - release
    # date, from the metadata), in log2 buckets: not yet released, 0, 1-2, 3-6, 7-14 ... days.
    # Titles older than the last bucket share bias 0. 0 turns it off; so does use_metadata off
    # (release dates come from the metadata).
    freshness_buckets: int = 8
    # A second freshness table for titles embedded from metadata alone (untrained, or hidden by
    # id dropout): a trained young title's id embedding already holds its pull, so one shared
    # table learns too small a lift for a title nobody has seen yet.
    cold_freshness: bool = False
    # Title bias: each title's next-title logit adds a learned bias, its popularity apart from
    # anyone's taste (the dot product is left to carry taste). A trained title's bias is its own;
    # with metadata the bias is mixed, like the embedding, with one predicted from the title's
    # metadata by the same age gate, so a title embedded from metadata alone (new, or dropped
    # by cold_title_rate) gets the popularity its kind of title has. Starts at 0.
    title_bias: bool = False
    # Series: every episode's embedding adds a learned embedding of its series (shared by all
    # its episodes, starting at zero), so "the next episode of the series I am watching" is one
    # pattern to learn, not one per episode. Series indices come with the metadata
    # (pipelines.models.metadata.series_indices); num_series grows with the catalogue like
    # num_titles. Off without use_metadata.
    series_embedding: bool = True
    num_series: int = 0  # rows of the series table, series index 0..num_series-1
    # Continue watching: the next episode of a series the history has an episode of (the
    # successor of a seen episode, itself unseen) gets a learned logit bonus, a shared scalar
    # plus a linear read of the member's hidden state (how much this member finishes what they
    # start). Both start at zero. Needs use_metadata (series and episode order).
    continuation_bonus: bool = True
    # Recommend only the next episode of each series: an episode after the one that follows
    # the furthest episode in the history (or, for a series not started, after its first) gets
    # no score (-inf), as a service offers a series at the member's next episode, never at
    # episode 7 of a series they have not begun. Needs use_metadata (series and episode
    # positions come from the metadata).
    next_episode_only: bool = True
    # Train the next-title softmax over the same titles: episodes recommend would not offer at a
    # position (past a series' next one) are left out of it, the target excepted.
    train_servable_only: bool = False

    # --- objectives ------------------------------------------------------------------------
    num_sampled_negatives: int = 0  # 0: full softmax over the catalogue; >0: sampled softmax
    mtp_n: int = 0  # extra multi-token-prediction heads, predicting t+2 .. t+1+mtp_n
    mtp_weight: float = 0.1  # weight of the mean multi-token-prediction loss (0.5 hurt ml-100k)
    genre_weight: float = 0.0  # weight of the next-title genre BCE loss; 0 builds no genre head
    # Weight of a second next-title cross-entropy over the catalogue embedded from metadata alone
    # (every title as if released after training): the member's state learns to match a title
    # it has no interactions for on every target, not only on the young titles id dropout hides.
    # Costs a second (targets x titles) softmax per step. 0: off.
    metadata_loss_weight: float = 0.0
    # Label smoothing of every next-title cross-entropy (next title, multi-token, metadata):
    # this share of each target's mass goes evenly to the titles its row scores. At 0.1, on
    # the demo's validation days, seeds 0-3: NDCG@10 +0.0010 / +0.0000 / +0.0023 on 2026-01-04
    # / 05 / 06 (9 of 12 pairs up, 2 down); ml-100k validation, seed 2: -0.0008 / +0.0021
    # for the presets "cpu" / "cpu-b64" (noise: an unchanged preset moved 0.0022 between two
    # budgeted runs). But it lifts the whole tail of old titles to a floor that new titles
    # must beat: trained before 2026-01-04 and scored on 01-04..06, cold-start recall@50 fell
    # from 0.385 to 0.214 (seed 0). So it is off by default; the MovieLens fit presets, which
    # have no new titles, set it. Full softmax only (a sampled one scores a few titles).
    label_smoothing: float = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.num_titles < 1:
            raise ValueError(f"num_titles must be positive, got {self.num_titles}")
        if self.genres is not None and len(self.genres) != self.num_genres:
            raise ValueError(f"{len(self.genres)} genre names for num_genres={self.num_genres}")
        if self.genre_weight > 0 and self.num_genres < 1:
            raise ValueError("genre_weight > 0 needs num_genres >= 1 (the genre head's targets)")
        if self.genre_weight > 0 and not self.use_metadata:
            raise ValueError("genre_weight > 0 reads genres from title metadata: set use_metadata")
        unknown = set(self.token_features or ()) - set(TOKEN_FEATURES)
        if unknown:
            raise ValueError(f"unknown token_features {sorted(unknown)}; known: {TOKEN_FEATURES}")
        if self.freshness_buckets < 0:
            raise ValueError(f"freshness_buckets must be >= 0, got {self.freshness_buckets}")
        if not 0 <= self.cold_title_rate < 1:
            raise ValueError(f"cold_title_rate must be in [0, 1), got {self.cold_title_rate}")
        if not 0 < self.id_gate_init < 1:
            raise ValueError(f"id_gate_init must be in (0, 1), got {self.id_gate_init}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing > 0 and self.num_sampled_negatives > 0:
            raise ValueError(
                "label_smoothing needs the full softmax (num_sampled_negatives=0): a sampled "
                "softmax scores a few titles, so their mean is not the catalogue's"
            )
        if self.num_series < 0:
            raise ValueError(f"num_series must be >= 0, got {self.num_series}")
        if not 0 < self.window_stride <= self.max_len:
            raise ValueError(f"window_stride must be in 1..max_len, got {self.window_stride}")
        super().__post_init__(**kwargs)

    @property
    def metadata_dim(self) -> int:
        """Width of a title's metadata row: genre multi-hot then the scalar columns."""
        return self.num_genres + NUM_SCALAR_METADATA

    @property
    def active_token_features(self) -> tuple[str, ...]:
        """The token features the model embeds, in ``TOKEN_FEATURES`` order."""
        if not self.use_token_features:
            return ()
        chosen = TOKEN_FEATURES if self.token_features is None else self.token_features
        return tuple(f for f in TOKEN_FEATURES if f in chosen)

    @property
    def active_freshness_buckets(self) -> int:
        """The freshness buckets the model learns: ``freshness_buckets`` with metadata, else 0."""
        return self.freshness_buckets if self.use_metadata else 0

    @property
    def freshness_horizon_days(self) -> int:
        """Titles at least this many days old at a request fall past the last freshness bucket
        (bias 0); younger ones (and unreleased ones) get their bucket's bias."""
        buckets = self.active_freshness_buckets
        return 2 ** (buckets - 1) - 1 if buckets > 0 else 0

    @property
    def active_series_embedding(self) -> bool:
        """Whether episodes add their series' embedding: ``series_embedding`` with metadata."""
        return self.series_embedding and self.use_metadata

    @property
    def active_continuation_bonus(self) -> bool:
        """Whether next episodes of started series get the continue-watching bonus."""
        return self.continuation_bonus and self.use_metadata

    @property
    def active_next_episode_only(self) -> bool:
        """Whether recommendations keep only each series' next episode (needs metadata)."""
        return self.next_episode_only and self.use_metadata

    @property
    def active_attention_dropout(self) -> float:
        """Dropout on the attention weights: ``attention_dropout``, or ``dropout`` if unset."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FoundationConfig:
        """A config of the named size (``PRESETS``), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name].as_kwargs(), **NEW_MODEL_DEFAULTS, **overrides})


NEW_MODEL_DEFAULTS: dict[str, Any] = {
    "history_metadata": True,
    "skip_repeat_targets": True,
}
"""Settings every model built from a preset gets, whose class defaults stay off so that a
``config.json`` written before the setting existed still describes the weights beside it."""


@dataclass(frozen=True)
class ModelSize:
    """The size fields a preset sets; everything else keeps ``FoundationConfig``'s defaults."""

    d_model: int  # width of every token representation
    n_layers: int  # transformer blocks
    n_heads: int  # attention heads
    max_len: int  # window length
    window_stride: int  # training window stride
    dropout: float  # dropout while training

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PRESETS: dict[str, ModelSize] = {
    # Seconds on a laptop core: unit tests. No dropout, so runs compare exactly.
    "tiny": ModelSize(d_model=32, n_layers=2, n_heads=2, max_len=16, window_stride=8, dropout=0.0),
    # Minutes on two CPU cores over a sampled MovieLens: the end-to-end demo.
    "demo": ModelSize(
        d_model=64, n_layers=2, n_heads=2, max_len=200, window_stride=100, dropout=0.1
    ),
    # One GPU, a full dataset: the numbers we report.
    "benchmark": ModelSize(
        d_model=256, n_layers=4, n_heads=4, max_len=200, window_stride=100, dropout=0.1
    ),
}
"""Named model sizes; ``FoundationConfig.from_preset(name, num_titles=..., num_genres=...)``."""
