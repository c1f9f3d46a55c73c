"""RMAAT and its iso-architecture baselines: one module, every arch of the table in
rmaat_model.model_config (which also documents the block layout and the two readings of
the retention schedule).

RMAAT (Mia, Bal, Sengupta, ICLR 2026) is a segment-recurrent encoder: the sequence is cut
into T segments, M memory tokens are joined to each segment, attention inside a segment is
the linear-cost *astromorphic* attention, and the memory outputs of segment t, weighted by
the LTP retention factor RF(t, T) of a ``retention.json``, become the memory of segment t+1.

All share one code path (embedding, blocks, heads); only the attention kernel and the
recurrence differ, so a comparison is iso-architecture at equal width and depth.

Shape legend
    B   batch (B' = 2B when the two-tower matching head stacks both documents)
    L   tokens per sequence as given (padded with pad_id at the end)
    N   segment_len, tokens per segment        T   segments (per sequence: T_b = ceil(len_b / N))
    M   n_mem, memory tokens                   W   window attended at once (M + N, or L)
    D   d_model      nh  n_heads      hs  head size = D / nh      m  astro processes (= hs)
    V   vocab_size   K   n_classes

Open choices the paper leaves (each decided here, documented where it is made):
    * phi = elu + 1 on Q, K and R (paper).
    * R (W x m): positions of the window and m process centres both on [0, 1):
      pos_w = w / W_cap, c_j = (j + 1/2) / m, r_wj = exp(-|pos_w - c_j| * astro_scale), with
      W_cap the window *capacity* (M + N, or max_len), never the actual length, so padding
      cannot move the map. m must equal hs: H_astro (m x hs) is added to H_neuron (hs x hs).
    * The 1/m of the paper divides H_neuron and H_astro only, not C (literal reading). With
      alpha = 1 and H_astro off the layer is therefore normalised linear attention / m; the
      constant is absorbed by the output projection. RLT uses exactly that kernel.
    * g = (sum_t phi(k_t))^alpha elementwise over the head dimension, sums over real keys
      only (padding masked out of every sum); alpha = 0.25 (predecessor paper).
    * "+ X" is the block's residual connection; LayerNorm placement is ``norm`` (model_config).
    * Dropout: one random draw per segment (or per whole-sequence pass) gives every dropout
      site's mask, so AMRB's replay repeats one RNG call per segment; p is rounded to a
      multiple of 2^-16 (``rmaat_model.kernels.dropout_masks``).
    * Memory tokens sit before the segment tokens; attention within [mem; segment] is
      bidirectional (encoder). The initial memory is learned. The state handed between
      segments is the *unscaled* memory output; RF(t, T) multiplies it as it enters segment
      t+1, which is the paper's mem_{t+1} = RF(t, T) mem'_{t+1}, and lets the classifier
      read the last segment's memory unscaled (pool = "mem").
    * T and RF(t, T) come from each sequence's real length; segments past a sequence's end
      leave its state untouched, so appending padding cannot change the logits. They are not
      computed at all: segment t runs on the sequences with t < T_b only (``Plan.rows``).
    * AT and Transformer attend over the whole (real part of the) sequence with learned
      absolute positions; segment_len and n_mem do not apply to them.
    * AT with at_scope = "segment" is the segment-local, memory-free control: the sequence is
      cut into RMAAT's segments (segment_len, the last one padded), each segment would be
      encoded alone (no memory tokens, nothing passed between segments; positions learned per
      in-segment offset, R laid out on the capacity N), and the classifier reads the mean
      over the real tokens of each sequence's last real segment -- where a memory arch reads
      its last real segment's memory outputs. As no other segment can reach the logits, only
      that last segment is computed (``plan`` cuts it out); the result is the same.
    * Positions of memory archs are learned per in-segment offset (same for every segment).
    * In a memory arch's last block only the M memory rows are queries (the segment's tokens
      are keys only): nothing else of that block is ever read, so it is not computed -- its Q
      projection, attention output, FFN and LayerNorms run on the M rows, K and V on all
      (in both layouts: the pre-LN block's LayerNorm before the attention runs on every row,
      as K and V read it).
    * Mixed precision (``torch.autocast``): the linear-kernel blocks compute their products and
      the kernel in autocast's dtype and keep residual sums and LayerNorms in float32, with
      autocast off inside (``rmaat_model.fused_block``), so the dtypes are the same on every device.

Third-party imports: torch only. ``build_model`` turns the retention.json into the RF table
through ``rmaat_model.schedule`` (which reads the file with NumPy, only when one is needed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.blocks import Block
from rmaat_model import native
from rmaat_model.kernels import autocast_dtype, dropout_masks, layer_masks, mask_rows
from rmaat_model.model_config import ModelConfig
from rmaat_model.schedule import retention_table


# --------------------------------------------------------------------------- the model
@dataclass
class Plan:
    """A batch made ready: lengths, segment counts, tokens cut to what is needed."""

    tokens: torch.Tensor     # (B', T*N) memory archs, (B', N) segment-local AT (each sequence's last
    #                          real segment), (B', max real length) whole-sequence archs
    key_mask: torch.Tensor   # same shape, bool: True for real tokens
    lengths: torch.Tensor    # (B',) real length = index of the last non-pad token + 1
    n_seg: torch.Tensor      # (B',) T_b = ceil(len_b / N) (1 for whole-sequence archs)
    n_segments: int          # T = max_b T_b
    batch: int               # B, sequences per tower
    all_real: bool           # no padding anywhere (lets softmax skip its mask)
    seg_tokens: tuple[torch.Tensor, ...] = ()   # memory archs, per segment t: its tokens (B', N)
    seg_key_mask: tuple[torch.Tensor, ...] = ()  # and its window's key mask (B', M+N): [memory rows; segment t]
    seg_all_real: tuple[bool, ...] = ()        # per segment: no padded key among its active rows
    same_length: bool = False                  # every sequence has T segments (no per-row selects)
    rows: tuple[torch.Tensor | None, ...] = ()   # per segment: indices of the sequences still running
    #                                              (t < T_b), None where all are; only they are computed
    rf: tuple[torch.Tensor, ...] = ()          # a fixed schedule: RF(t, T_b) (B', 1, 1) at [t-1]
    #   (the per-segment views are cut once per batch: AMRB's replay reads them again)


class RMAAT(nn.Module):
    """Every arch of the module table; ``forward`` is the full-graph (BPTT) pass.

    The recurrence is exposed step by step for AMRB (rmaat_model.amrb):
    ``plan`` -> ``initial_memory`` -> ``step`` (t = 0 .. T-1) -> ``readout``.
    """

    def __init__(self, cfg: ModelConfig, rf_table: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        if cfg.has_memory:
            w_cap = cfg.n_mem + cfg.segment_len
            self.pos_emb = nn.Parameter(torch.randn(cfg.segment_len, D) * 0.02)   # (N, D) in-segment offset
            self.mem_init = nn.Parameter(torch.randn(cfg.n_mem, D) * 0.02)        # (M, D) learned memory
            Tc = cfg.max_segments
            if rf_table is None:
                rf_table = torch.ones(Tc, Tc)
            if tuple(rf_table.shape) != (Tc, Tc):
                raise ConfigError(f"retention table has shape {tuple(rf_table.shape)}; expected ({Tc}, {Tc}) "
                                  f"= ceil(max_len / segment_len) squared")
            rf_table = rf_table.detach().to(torch.float32).clone()
            if cfg.effective_retention == "learned":  # own learning rate, no weight decay: param_groups()
                self.rf_table = nn.Parameter(rf_table)             # (T_cap, T_cap): RF(t, T) at [T-1, t-1]
            else:
                self.register_buffer("rf_table", rf_table)
        elif cfg.segmented:  # segment-local AT: one segment is the window, no memory tokens
            w_cap = cfg.segment_len
            self.pos_emb = nn.Parameter(torch.randn(cfg.segment_len, D) * 0.02)   # (N, D) in-segment offset
        else:
            w_cap = cfg.max_len
            self.pos_emb = nn.Parameter(torch.randn(cfg.max_len, D) * 0.02)       # (max_len, D) absolute
        self.blocks = nn.ModuleList(Block(cfg, w_cap) for _ in range(cfg.n_layers))
        self._compiled_window = None   # set by compile_blocks()
        if cfg.arch == "elastic":  # HiPPO-LegS compressed history, read back as n_mem memory tokens
            from rmaat_model.elastic import ElasticMemory
            self.elastic = ElasticMemory(D, cfg.elastic_dim or D, cfg.elastic_coef, cfg.n_mem,
                                         cfg.elastic_points, cfg.segment_len, cfg.max_segments)
        self.ln_f = nn.LayerNorm(D)
        if cfg.head == "match":  # two-tower: shared encoder, features [u, v, u*v, u-v]
            self.head = nn.Sequential(nn.Linear(4 * D, D), nn.GELU(), nn.Linear(D, cfg.n_classes))
        else:
            self.head = nn.Linear(D, cfg.n_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def has_memory(self) -> bool:
        return self.cfg.has_memory

    def retention_parameters(self) -> list[nn.Parameter]:
        """The learned retention table (``retention = "learned"``), else empty."""
        return [self.rf_table] if isinstance(getattr(self, "rf_table", None), nn.Parameter) else []

    @torch.no_grad()
    def project_retention(self) -> None:
        """Keep a learned table in its range (``cfg.retention_range``): with "unit", clamp it
        onto [0, 1] in place (projected gradient descent; ``make_optimizer`` calls this after
        every step). Nothing to do for a fixed schedule or a "free" table."""
        if self.cfg.retention_range == "unit":
            for p in self.retention_parameters():
                p.clamp_(0.0, 1.0)

    def param_groups(self, lr: float, weight_decay: float, retention_lr: float | None = None) -> list[dict]:
        """AdamW groups: 2-D weights (linear layers, embeddings) decay; biases, LayerNorm gains and
        the initial memory do not; the learned retention table (parameter name ``rf_table``, also
        ``retention_parameters()``) gets ``retention_lr`` (default: lr) and no weight decay."""
        decay, no_decay, retention = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name == "rf_table":
                retention.append(p)
            elif p.dim() >= 2 and name not in ("mem_init",):
                decay.append(p)
            else:
                no_decay.append(p)
        groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
                  {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
        if retention:
            groups.append({"params": retention, "lr": lr if retention_lr is None else retention_lr,
                           "weight_decay": 0.0})
        return groups

    # -- input ----------------------------------------------------------------------------
    def plan(self, tokens: torch.Tensor, tokens2: torch.Tensor | None = None) -> Plan:
        cfg = self.cfg
        if cfg.head == "match" and tokens2 is None:
            raise DataError("the matching head needs a second document: pass tokens2 (B, L2)")
        if cfg.head == "cls" and tokens2 is not None:
            raise DataError("tokens2 was given but the model's head is 'cls'; use head='match' for pairs")
        towers = [tokens] if tokens2 is None else [tokens, tokens2]
        for i, x in enumerate(towers):
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise DataError(f"tokens{'' if i == 0 else '2'}: expected an integer tensor (B, L); "
                                f"got {tuple(x.shape)} {x.dtype}")
        if tokens2 is not None:
            if tokens2.shape[0] != tokens.shape[0]:
                raise DataError(f"tokens has {tokens.shape[0]} rows but tokens2 has {tokens2.shape[0]}")
            L = max(tokens.shape[1], tokens2.shape[1])
            towers = [F.pad(x, (0, L - x.shape[1]), value=cfg.pad_id) for x in towers]
        x = torch.cat(towers, dim=0).long()                                   # (B', L)
        nonpad = x != cfg.pad_id
        pos1 = torch.arange(1, x.shape[1] + 1, device=x.device)
        lengths = (nonpad * pos1).amax(dim=1) if x.shape[1] else torch.zeros(x.shape[0], dtype=torch.long)
        longest, shortest = int(lengths.max()), int(lengths.min())
        if longest > cfg.max_len:
            raise DataError(f"sequence of {longest} tokens is longer than the model's max_len = {cfg.max_len}")
        if shortest == 0:
            raise DataError("a sequence holds only padding (pad_id = {}); expected at least one real token"
                            .format(cfg.pad_id))
        if int(x.max()) >= cfg.vocab_size or int(x.min()) < 0:
            raise DataError(f"token id {int(x.max()) if int(x.max()) >= cfg.vocab_size else int(x.min())} "
                            f"is outside the vocabulary [0, {cfg.vocab_size})")
        if cfg.segmented:
            N = cfg.segment_len
            n_seg = (lengths + N - 1) // N
            T = int(n_seg.max())
            width = T * N
        else:
            n_seg = torch.ones_like(lengths)
            T, width = 1, longest
        x = F.pad(x, (0, width - x.shape[1]), value=cfg.pad_id) if width > x.shape[1] else x[:, :width]
        if cfg.segmented and not cfg.has_memory:  # segment-local AT: only the last real segment is read
            start = (n_seg - 1) * N                                           # (B',)
            x = x.gather(1, start[:, None] + torch.arange(N, device=x.device))   # (B', N)
        key_mask = x != cfg.pad_id
        seg_tokens, seg_key_mask, seg_all_real, rf, rows = (), (), (), (), ()
        if cfg.has_memory:   # built once per batch, sliced per segment
            per_seg = key_mask.view(-1, T, cfg.segment_len)                        # (B', T, N)
            seg_tokens = x.view(-1, T, cfg.segment_len).unbind(1)
            seg_key_mask = torch.cat([per_seg.new_ones(per_seg.shape[0], T, cfg.n_mem), per_seg],
                                     dim=2).unbind(1)                              # T x (B', M+N)
            real = per_seg.all(dim=2)                                              # (B', T)
            if cfg.arch != "elastic":   # elastic computes every row (RMAAT.step)
                active = torch.arange(T, device=x.device)[None, :] < n_seg[:, None]    # (B', T)
                rows = tuple(None if bool(active[:, t].all()) else active[:, t].nonzero().squeeze(1)
                             for t in range(T))
                real = real | ~active   # a finished sequence's all-padding segment is not computed
            seg_all_real = tuple(real.all(dim=0).tolist())
            if cfg.effective_retention != "none" and not self.rf_table.requires_grad:
                rf = self.rf_table[n_seg - 1, :T].T[:, :, None, None].unbind(0)  # T x (B', 1, 1)
        return Plan(tokens=x, key_mask=key_mask, lengths=lengths, n_seg=n_seg, n_segments=T,
                    batch=tokens.shape[0], all_real=bool(key_mask.all()),
                    seg_tokens=seg_tokens, seg_key_mask=seg_key_mask, seg_all_real=seg_all_real,
                    same_length=bool(n_seg.min() == T), rf=rf, rows=rows)

    # -- the recurrence (memory archs) ----------------------------------------------------
    def initial_memory(self, plan: Plan) -> torch.Tensor:
        """(B', M, D) learned memory tokens; for elastic the empty LegS state (B', d_mem, n_coef)."""
        if self.cfg.arch == "elastic":
            return self.elastic.initial_state(plan.tokens.shape[0], self.mem_init.dtype, plan.tokens.device)
        return self._learned_memory(plan)

    def _learned_memory(self, plan: Plan) -> torch.Tensor:
        return self.mem_init.unsqueeze(0).expand(plan.tokens.shape[0], -1, -1)   # (B', M, D)

    def memory_tokens(self, plan: Plan, t: int, state: torch.Tensor) -> torch.Tensor:
        """Elastic: the memory tokens joining segment t (B', M, D), sampled from the state."""
        if t == 0:   # no history yet: the learned initial memory
            return self._learned_memory(plan)
        return self.elastic.read(state, t - 1)

    def set_sampling(self, sampling, fractions: tuple[float, ...] = ()) -> None:
        """Elastic: change where the history is sampled (e.g. at evaluation); no retraining."""
        if self.cfg.arch != "elastic":
            raise ConfigError(f"set_sampling applies to arch 'elastic', not {self.cfg.arch!r}")
        self.cfg = dataclasses.replace(self.cfg, elastic_sampling=sampling, elastic_fractions=tuple(fractions))
        self.elastic.sampling = self.cfg.elastic_points

    def retention_scale(self, plan: Plan, t: int) -> torch.Tensor:
        """RF(t, T_b) per sequence for the state leaving 0-based segment t-1: (B',)."""
        return self.rf_table[plan.n_seg - 1, t - 1]

    def _rf(self, plan: Plan, t: int, dtype: torch.dtype) -> torch.Tensor:
        """retention_scale as (B', 1, 1): sliced from the plan's table for a fixed schedule; a
        learned one is indexed per segment so that each replayed segment has its own graph."""
        rf = plan.rf[t - 1] if plan.rf else self.retention_scale(plan, t)[:, None, None]
        return rf if rf.dtype == dtype else rf.to(dtype)

    def step(self, plan: Plan, t: int, state: torch.Tensor, *, continuing_only: bool = False) -> torch.Tensor:
        """Segment t (0-based): the memory state (B', M, D) carried out of segment t-1 -> that of t.

        continuing_only: compute only the sequences that run on past segment t (t + 1 < T_b), whose
        state a later segment reads; the rows of those that end here are left as they came in.
        AMRB's first pass uses it when the loss reads each sequence's final state in the replay
        (``rmaat_model.amrb.forward_backward``). The dropout draw is still that of every sequence
        running at t, so the computed rows get the masks, and the RNG the state, of a full step.
        At the last segment (t = T-1) no sequence runs on, and it has no effect.

        literal reading: the state is the unscaled memory output mem'_t, and RF(t-1, T) scales it
        as it enters segment t (the paper's mem_t = RF mem'_t). integrating: the state is the
        memory itself, mem_{t+1} = mem_t + RF(t, T) (mem'_{t+1} - mem_t), the output of a
        sequence's last real segment is handed on unscaled (the classifier reads it), as in the
        literal reading. retention "none" is the same under both: mem_{t+1} = mem'_{t+1}.
        """
        cfg, N, M = self.cfg, self.cfg.segment_len, self.cfg.n_mem
        mode = cfg.effective_retention
        integrating = cfg.retention_reading == "integrating" and mode != "none"
        elastic = cfg.arch == "elastic"
        # Only the sequences still running (t < T_b) are computed; a finished one keeps its state.
        # Every row is computed independently of the others, so this changes no value beyond
        # float round-off (a product over fewer rows can take another kernel). The dropout draw
        # is for the running rows only. Elastic writes every row (its history's clock runs for all).
        rows = plan.rows[t] if plan.rows else None                           # () for elastic
        drawn = None   # (rows the dropout draw is for, positions of the computed rows among them)
        if continuing_only and plan.rows and t + 1 < plan.n_segments:
            nxt = plan.rows[t + 1]                                           # running past t
            n_t = state.shape[0] if rows is None else rows.numel()
            if nxt is not None and nxt.numel() < n_t:
                drawn = (n_t, nxt if rows is None else torch.searchsorted(rows, nxt))
                rows = nxt
        pick = (lambda a: a) if rows is None else (lambda a: a.index_select(0, rows))
        seg = pick(plan.seg_tokens[t])                                       # (b, N), b = running rows
        key_mask = pick(plan.seg_key_mask[t])                                # (b, M+N)
        run = pick(state)                                                    # (b, M, D)
        if elastic:
            mem = self.memory_tokens(plan, t, state)
        elif t == 0 or integrating or mode == "none":
            mem = run
        else:
            mem = run * pick(self._rf(plan, t, state.dtype))
        B, W, D = seg.shape[0], M + N, cfg.d_model
        # only the memory rows of the last block are read: the segment's tokens attend as keys
        # there but are not computed as queries (saves that block's Q, FFN and norms on N
        # rows); elastic writes every token's state
        last_queries = None if elastic else M
        masks = dropout_masks(mask_rows(len(self.blocks), W, N, last_queries), B if drawn is None else drawn[0],
                              D, cfg.dropout, state, self.training)
        if masks is not None and drawn is not None:
            masks = [m.index_select(0, drawn[1]) for m in masks]
        x = self._window(mem, seg, None if masks is None else masks[0])      # (b, M+N, D)
        x = self.encode_window(x, key_mask, plan.seg_all_real[t], last_queries, masks)
        if elastic:       # the segment's tokens extend the compressed history (padding adds nothing)
            return self.elastic.write(state, x[:, M:], t, key_mask[:, M:])
        if plan.same_length:   # every sequence is active here, and its last segment is T-1
            if integrating and t < plan.n_segments - 1:   # RF(t+1, T) in 1-based segments
                x = torch.lerp(state, x, self._rf(plan, t + 1, x.dtype))
            return x                                                         # (B', M, D)
        if integrating:   # RF(t+1, T_b) in 1-based segments; the last real segment's output as is
            rf = pick(self._rf(plan, t + 1, x.dtype))                                  # (b, 1, 1)
            x = torch.where(pick(t == plan.n_seg - 1)[:, None, None], x, torch.lerp(run, x, rf))
        return x if rows is None else state.index_copy(0, rows, x)          # (B', M, D)

    def _window(self, mem: torch.Tensor, seg: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """A segment's window [mem | (tok_emb(seg) + pos_emb) * keep] (b, M+N, D): on the CPU in
        full precision one pass of the C++ extension (rmaat_model.native), bitwise these operators
        (keep, a dropout mask, is a constant there)."""
        w = self.tok_emb.weight
        if (mem.device.type == "cpu" and autocast_dtype(mem) is None and native.usable(mem, w, self.pos_emb, keep)
                and seg.dtype == torch.long and self.pos_emb.shape == (seg.shape[1], w.shape[1])
                and (keep is None or (keep.shape == (*seg.shape, w.shape[1]) and not keep.requires_grad))
                and (ext := native.extension()) is not None):
            return ext.window(mem, seg, w, self.pos_emb, keep)
        emb = self.tok_emb(seg) + self.pos_emb                               # (b, N, D)
        return torch.cat([mem, emb if keep is None else emb * keep], dim=1)

    def encode_window(self, x: torch.Tensor, key_mask: torch.Tensor, all_real: bool, last_queries: int | None,
                      masks: list[torch.Tensor] | None) -> torch.Tensor:
        """The block stack over one window x (B', W, D); the last block computes only its first
        ``last_queries`` rows (all when None). masks: a ``dropout_masks`` draw or None."""
        fn = self._compiled_window if self._compiled_window is not None else self._encode_window
        return fn(x, key_mask, all_real, last_queries, masks)

    def _encode_window(self, x, key_mask, all_real, last_queries, masks):
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, all_real, last_queries if i == n - 1 else None, layer_masks(masks, i))
        return x

    def compile_blocks(self, **options) -> "RMAAT":
        """Run the block stack through ``torch.compile`` (``options`` go to it). Dropout masks are
        drawn outside the compiled graph, so AMRB's replay redraws them from the saved RNG state
        exactly as in eager mode. The weights and the state_dict are the module's own. Returns self.

        ``dynamic=True`` is refused here, before anything compiles: under torch 2.13 dynamo stops
        inside the block's autograd Function at the first forward (pytorch/pytorch#111031; docs/model.md).
        Left unset, torch.compile turns to dynamic shapes by itself once a second shape is seen."""
        if options.get("dynamic"):
            raise ConfigError(f"compile_blocks(dynamic={options['dynamic']!r}): dynamo cannot trace the fused block's autograd "
                              "Function with every size symbolic (pytorch/pytorch#111031); leave dynamic unset "
                              "(dynamic shapes follow after a second shape) or pass dynamic=False")
        self._compiled_window = torch.compile(self._encode_window, **options)
        return self

    # -- whole-sequence archs -------------------------------------------------------------
    def encode(self, plan: Plan) -> torch.Tensor:
        """Transformer / AT: final hidden states of the whole sequence (B', L', D), or of the last
        real segment (B', N, D) for segment-local AT (plan cut it out)."""
        B, W = plan.tokens.shape
        emb = self.tok_emb(plan.tokens) + self.pos_emb[:W]                   # (B', L', D)
        masks = dropout_masks(mask_rows(len(self.blocks), W, W, None), B, self.cfg.d_model, self.cfg.dropout,
                              emb, self.training)
        x = emb if masks is None else emb * masks[0]
        return self.encode_window(x, plan.key_mask, plan.all_real, None, masks)

    # -- readout --------------------------------------------------------------------------
    def features(self, plan: Plan, state: torch.Tensor) -> torch.Tensor:
        """(B', D) pooled features from the final memory state (B', M, D) or hidden states (B', L', D)."""
        if self.cfg.arch == "elastic":   # the memory tokens the history would hand on
            state = self.elastic.read(state, max(plan.n_segments - 1, 0))
        h = self.ln_f(state)
        if self.has_memory:
            return h.mean(dim=1)
        mask = plan.key_mask.unsqueeze(-1).to(h.dtype)                      # (B', L', 1)
        return (h * mask).sum(dim=1) / mask.sum(dim=1)

    def readout(self, plan: Plan, state: torch.Tensor) -> torch.Tensor:
        """logits (B, K)."""
        f = self.features(plan, state)
        if self.cfg.head == "match":
            u, v = f[:plan.batch], f[plan.batch:]
            f = torch.cat([u, v, u * v, u - v], dim=-1)                      # (B, 4D)
        return self.head(f)

    def forward(self, tokens: torch.Tensor, tokens2: torch.Tensor | None = None) -> torch.Tensor:
        """Full-graph forward: tokens (B, L) [, tokens2 (B, L2)] -> logits (B, K)."""
        plan = self.plan(tokens, tokens2)
        if self.has_memory:
            state = self.initial_memory(plan)
            for t in range(plan.n_segments):
                state = self.step(plan, t, state)
        else:
            state = self.encode(plan)
        return self.readout(plan, state)


# --------------------------------------------------------------------------- construction
def build_model(cfg: ModelConfig, *, rf_table: torch.Tensor | None = None) -> RMAAT:
    """The model for ``cfg``. The retention file is read unless ``rf_table`` is given (checkpoints)."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"build_model expects a ModelConfig; got {type(cfg).__name__}")
    if rf_table is None:
        rf_table = retention_table(cfg)
    return RMAAT(cfg, rf_table)


@dataclass(frozen=True)
class Footprint:
    """What ``build_model(cfg)`` holds: element counts of its parameters and buffers, and its
    largest tensor (name, shape)."""
    parameters: int
    buffers: int
    largest: tuple[str, tuple[int, ...]]


def footprint(cfg: ModelConfig) -> Footprint:
    """``build_model(cfg)``'s tensors, counted on the meta device: nothing is allocated, so a
    size that would not fit in memory can be refused before it is tried (``rmaat_model.train``)."""
    with torch.device("meta"):
        model = build_model(cfg)
    named = list(model.named_parameters()) + list(model.named_buffers())
    name, biggest = max(named, key=lambda nt: nt[1].numel())
    return Footprint(sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers()),
                     (name, tuple(biggest.shape)))
