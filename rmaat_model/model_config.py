"""ModelConfig: which model (the arch table below) at which sizes, checked when it is made.

    arch          attention inside a window             memory   retention
    rmaat         astromorphic (H_neuron + H_astro)     yes      cfg.retention, cfg.retention_reading
    rmt           softmax                               yes      none (paper's RMT)
    rlt           normalised linear (alpha=1, no H_astro) yes    none (paper's RLT)
    elastic       softmax                               HiPPO-LegS state, sampled (rmaat_model.elastic)
    at            astromorphic over the whole sequence  no       -
    at (segment)  astromorphic within one segment       no       -   (at_scope = "segment")
    transformer   softmax over the whole sequence       no       -

``ARCH_TABLE`` is the one list of arch names: ``ARCHS``, ``MEMORY_ARCHS`` and the type of
``ModelConfig.arch`` are read from it. All archs share one code path (rmaat_model.model:
embedding, blocks, heads); only the attention kernel and the recurrence differ, so a
comparison is iso-architecture at equal width and depth.

Block layout (``norm``, default "post"): LayerNorm after each residual add, Y = LN(X + Attn X),
then LN(Y + FFN Y), the layout of the astromorphic-transformer papers RMAAT builds on. In a
pre-LN block (X + Attn(LN X), nanoGPT) LayerNorm makes each segment's new writes independent
of the memory's scale, so RF damps only the copy carried along the residual, and the damping
multiplies across hand-offs. Measured (bench/retention_curve.py --task recall: answer in
segment 1 of 2..16 segments, 300 steps, the shipped schedule): pre-LN stays at chance with
every schedule (ltp 12.4 %, literal 13.1 %, none 17.8 %; on fed26ad), post-LN learns. At 900 steps pre-LN
learns too (none 94.4 ± 12.5 %, ltp 73.1 ± 27.9 %; post-LN ltp 100 %; on b33b384): the layout sets how fast
the memory learns (docs/retention.md, where pre-LN with unscaled memory leads on assoc). On assoc
with four facts over 16 segments (10 000 steps, peak lr 5e-3) pre-LN learns and post-LN does not
(integrating ltp 32.8 against 14.0 %, 3 seeds); at lr 1e-3 both learn, pre-LN ahead (34.2 against
26.9 %): the default suits recall, and on assoc over 16 segments it needs the smaller rate.

Two readings of the schedule (``retention_reading``), both from the same retention.json:
    literal       mem_{t+1} = RF(t, T) mem'_{t+1}                     (the paper's formula)
    integrating   mem_{t+1} = mem_t + RF(t, T) (mem'_{t+1} - mem_t)   (default)
The integrating reading lets the memory integrate each segment's write weighted by the LTP
increment, as p^l integrates its increments (row sum sum_t RF(t, T) = 1; a sequence applies
RF(1..T-1, T)). On the benchmark above (fed26ad) it reaches 99.9 ± 0.2 % (5 seeds) against
17.2 ± 10.7 % for the literal reading (RF(t, 16) runs 0.119 .. 0.027, so the literal product of
factors vanishes), 96.0 ± 6.2 % for the flat RF = 1/T control (3 seeds) and 71.5 ± 28.3 % for
unscaled memory (``none``). ``stream`` (RF_inf(t)) reads the same two ways.

No third-party imports: the config can be read and checked without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from astro_rmaat.errors import ConfigError


class Arch(NamedTuple):
    kernel: str     # attention inside a window: "astro", "linear" (RLT) or "softmax"
    memory: bool    # memory tokens carried from segment to segment


#: arch name -> its kernel and whether it carries memory (the module table)
ARCH_TABLE: dict[str, Arch] = {
    "rmaat": Arch("astro", True),
    "rmt": Arch("softmax", True),
    "rlt": Arch("linear", True),
    "elastic": Arch("softmax", True),
    "transformer": Arch("softmax", False),
    "at": Arch("astro", False),
}
ARCHS = tuple(ARCH_TABLE)
MEMORY_ARCHS = tuple(name for name, arch in ARCH_TABLE.items() if arch.memory)
RETENTIONS = ("ltp", "stream", "learned", "flat", "reversed", "none")
READINGS = ("integrating", "literal")
RETENTION_RANGES = ("unit", "free")
NORMS = ("post", "pre")
HEADS = ("cls", "match")
POOLS = ("auto", "mem", "mean")
SAMPLINGS = ("uniform", "recent", "fractions")
AT_SCOPES = ("sequence", "segment")
#: fields a model config stored before they existed lacks, with the value its model was built
#: with: pre-LN blocks and the literal RF reading (today's defaults are post-LN, integrating).
#: A ``learned`` table was unbounded before ``retention_range``; only a learned model reads it,
#: so ``with_legacy_layout`` gives "free" to those alone.
LEGACY_DEFAULTS = {"norm": "pre", "retention_reading": "literal"}
LEGACY_LEARNED_RANGE = "free"
#: fields that must be integers >= 1 for every arch
POSITIVE_INTS = ("vocab_size", "n_classes", "max_len", "d_model", "n_heads", "n_layers", "d_ff",
                 "segment_len")


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal[ARCHS] = "rmaat"  # model family (module doc)
    vocab_size: int = 32          # token ids are 0 .. vocab_size-1, pad_id included
    n_classes: int = 10           # K, classifier outputs
    max_len: int = 2048           # longest real sequence accepted (tokens); longer input is an error
    pad_id: int = 0               # padding token id, masked out of every sum
    d_model: int = 64             # D, residual width
    n_heads: int = 4              # nh, attention heads (D must be divisible by nh)
    n_layers: int = 2             # encoder blocks
    d_ff: int = 128               # hidden width of the feed-forward sublayer
    dropout: float = 0.1          # dropout probability (embeddings, attention output, FFN)
    segment_len: int = 128        # N, tokens per segment (memory archs only)
    n_mem: int = 8                # M, memory tokens (memory archs only; must be >= 1 there)
    retention: Literal[RETENTIONS] = "ltp"  # rmaat's schedule: RF(t,T)
    #   from retention_file / RF_inf(t) (no T) / learned table initialised from ltp / RF = 1/T (the
    #   same row sum with no LTP shape: a control) / RF(T-t, T) at hand-off t < T, the ltp
    #   values a sequence applies in reverse order (rising: a control for the shape's direction) /
    #   none (memory passed on unscaled).
    #   rmt and rlt are the paper's baselines without RF: for them it is always "none".
    retention_reading: Literal[READINGS] = "integrating"  # how RF acts on the memory:
    #   integrating mem_{t+1} = mem_t + RF(t,T) (mem'_{t+1} - mem_t); literal mem_{t+1} = RF(t,T) mem'_{t+1}
    retention_range: Literal[RETENTION_RANGES] = "unit"  # retention "learned" only: after every
    #   optimiser step the table is projected onto [0, 1] (unit), so the integrating update stays a
    #   convex mix of the old memory and the new write and the literal one damps; free leaves it
    #   unbounded (the behaviour before the field: the assoc benchmark's tables left [0, 1] in
    #   every run and the integrating update extrapolated).
    norm: Literal[NORMS] = "post"  # LayerNorm after each residual add (post) or before each
    #   sublayer (pre, nanoGPT); every arch shares it. Checkpoints without the field load as "pre".
    retention_file: str | None = None  # retention.json; None -> astro_rmaat.retention.default_retention_path()
    alpha: float = 0.25           # presynaptic exponent in g = (sum phi(k))^alpha (rmaat, at)
    n_astro: int | None = None    # m, astro processes per head; None -> head size (the only valid value)
    astro_scale: float = 8.0      # decay rate of r = exp(-|pos - c| * scale), positions on [0, 1) per window
    head: Literal[HEADS] = "cls"  # cls: one sequence; match: two-tower document pair (tokens2)
    pool: Literal[POOLS] = "auto"  # readout: mem = mean of the last real segment's memory
    #   outputs (memory archs); mean = mean over real tokens (whole-sequence archs); auto picks by arch.
    elastic_coef: int = 16        # elastic: Legendre coefficients per feature of the HiPPO-LegS state
    elastic_dim: int | None = None  # elastic: features compressed per token (d_mem); None -> d_model
    elastic_sampling: Literal[SAMPLINGS] = "uniform"  # elastic: where the
    #   history is sampled for the n_mem memory tokens (uniform over [0, t], denser near the
    #   present, or elastic_fractions); can be changed at evaluation (RMAAT.set_sampling)
    elastic_fractions: tuple[float, ...] = ()  # elastic_sampling = "fractions": n_mem points in [0, 1]
    at_scope: Literal[AT_SCOPES] = "sequence"  # what arch "at" attends over: the whole
    #   sequence (the paper's AT) or each segment of segment_len tokens alone (memory-free control,
    #   read out from the last real segment). Only "at" reads it; "segment" with another arch is an error.

    def __post_init__(self):
        self._check_choices()
        self._check_arch_options()
        self._check_sizes()
        self._check_attention()
        self._check_pool()

    def _check_choices(self) -> None:
        for name, choices in (("arch", ARCHS), ("retention", RETENTIONS), ("retention_reading", READINGS),
                              ("retention_range", RETENTION_RANGES),
                              ("norm", NORMS), ("head", HEADS), ("pool", POOLS), ("at_scope", AT_SCOPES),
                              ("elastic_sampling", SAMPLINGS)):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"model {name} = {value!r}: expected one of {', '.join(map(repr, choices))}")

    def _check_arch_options(self) -> None:
        """Options that only one arch reads: elastic's history, at's scope."""
        if self.arch == "elastic":
            self._check_elastic()
        if self.at_scope == "segment" and self.arch != "at":
            raise ConfigError(f"model at_scope = 'segment' applies to arch 'at' only; arch {self.arch!r} "
                              "has its own scope (use at_scope = 'sequence')")

    def _check_sizes(self) -> None:
        for name in POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {name} = {value!r}: expected an integer >= 1")
        if self.n_classes < 2 and self.head == "cls":
            raise ConfigError(f"model n_classes = {self.n_classes}: expected at least 2")
        if not (isinstance(self.pad_id, int) and 0 <= self.pad_id < self.vocab_size):
            raise ConfigError(f"model pad_id = {self.pad_id!r}: expected an id in [0, vocab_size={self.vocab_size})")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"model dropout = {self.dropout!r}: expected a probability in [0, 1)")
        if self.has_memory and (not isinstance(self.n_mem, int) or self.n_mem < 1):
            raise ConfigError(f"model n_mem = {self.n_mem!r}: arch {self.arch!r} carries memory tokens "
                              "between segments; expected an integer >= 1")

    def _check_attention(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha <= 1):
            raise ConfigError(f"model alpha = {self.alpha!r}: expected 0 < alpha <= 1")
        if not (isinstance(self.astro_scale, (int, float)) and self.astro_scale > 0
                and math.isfinite(self.astro_scale)):
            raise ConfigError(f"model astro_scale = {self.astro_scale!r}: expected a finite positive number")
        hs = self.d_model // self.n_heads
        if self.n_astro is not None and self.n_astro != hs:
            raise ConfigError(f"model n_astro = {self.n_astro!r}: H_astro (m x hs) is added to H_neuron "
                              f"(hs x hs), so m must equal the head size d_model/n_heads = {hs} (or be null)")

    def _check_pool(self) -> None:
        if self.pool == "mem" and not self.has_memory:
            raise ConfigError(f"model pool = 'mem' needs memory tokens; arch {self.arch!r} has none "
                              "(use 'mean' or 'auto')")
        if self.pool == "mean" and self.has_memory:
            raise ConfigError(f"model pool = 'mean' is not available for memory arch {self.arch!r}: its "
                              "classifier reads the last segment's memory (use 'mem' or 'auto')")

    def _check_elastic(self) -> None:
        for name in ("elastic_coef",) + (("elastic_dim",) if self.elastic_dim is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {name} = {value!r}: expected an integer >= 1")
        if self.elastic_sampling == "fractions":
            fr = self.elastic_fractions
            if len(fr) != self.n_mem:
                raise ConfigError(f"model elastic_fractions has {len(fr)} values: expected n_mem = {self.n_mem} "
                                  "sampling points in [0, 1]")
            bad = [f for f in fr if not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0)]
            if bad:
                raise ConfigError(f"model elastic_fractions value {bad[0]!r}: expected fractions in [0, 1] "
                                  "of the history's span")

    @property
    def elastic_points(self):
        """The sampling set handed to ElasticMemory: a mode name or the explicit fractions."""
        return tuple(self.elastic_fractions) if self.elastic_sampling == "fractions" else self.elastic_sampling

    # derived quantities -------------------------------------------------------------
    @property
    def has_memory(self) -> bool:
        return ARCH_TABLE[self.arch].memory

    @property
    def segmented(self) -> bool:
        """The input is cut into segments of segment_len (memory archs and segment-local AT)."""
        return self.has_memory or self.at_scope == "segment"

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads

    @property
    def max_segments(self) -> int:
        """T_cap = ceil(max_len / N): the largest T the retention table must hold."""
        return -(-self.max_len // self.segment_len)

    @property
    def effective_retention(self) -> str:
        return self.retention if self.arch == "rmaat" else "none"

    @property
    def kernel(self) -> str:
        return ARCH_TABLE[self.arch].kernel


def with_legacy_layout(data: dict) -> dict:
    """A stored model config (a checkpoint's, or a run's config.json) without ``norm`` /
    ``retention_reading`` predates them: its model had pre-LN blocks and the literal RF reading,
    so it reads that way (``LEGACY_DEFAULTS``), not with today's defaults. A learned schedule
    stored without ``retention_range`` was unbounded ("free"); for any other schedule the
    field is not read and takes today's default, so such a run resumes under the same command."""
    if not isinstance(data, dict):
        return data
    legacy = dict(LEGACY_DEFAULTS)
    if data.get("retention") == "learned":
        legacy["retention_range"] = LEGACY_LEARNED_RANGE
    return {**legacy, **data}
