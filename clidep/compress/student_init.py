"""Student initialisation: ``random`` (the model's own init) or ``teacher`` (start close to the teacher).

Teacher init, in the spirit of SliceGPT (residual stream) and Minitron (heads, neurons):

* protected blocks (full width) are copied unchanged;
* each run of narrow blocks of one width shares one residual basis Q (d x r): the top-r
  principal directions of the teacher's residual stream entering those blocks on calibration
  text. The projection into the run is Q^T, the one out of it Q, and between two runs of
  different widths Q_b^T Q_a;
* LayerNorm: the teacher's gain and bias are folded into the next linear layer, which then
  reads Q n_r(x_r) sqrt(d/r) instead of n(x): a normalised r-vector in the basis carries
  sqrt(d/r) times the per-component scale of the normalised d-vector it stands for. The
  re-centring inside the student's LayerNorm is not undone (the one approximation; distillation
  absorbs it);
* inside a narrow block, the most important heads (by ||W_v|| * ||W_o|| of the head) and
  MLP neurons (by ||w_fc|| * ||w_proj||) are kept; a head's q/k and v/o dimensions are ranked
  the same way and truncated, or zero-padded when the student's head is wider; q is rescaled so
  that q.k / sqrt(head size) keeps the teacher's scale; outputs are written back through Q^T.
"""

from __future__ import annotations

import math

import torch

from clidep.model.modeling import CLIGPT2LMHeadModel


def runs(widths: list[int], d: int) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of consecutive narrow (width != d) blocks of equal width."""
    out, i = [], 0
    while i < len(widths):
        if widths[i] == d:
            i += 1
            continue
        j = i
        while j < len(widths) and widths[j] == widths[i]:
            j += 1
        out.append((i, j))
        i = j
    return out


@torch.no_grad()
def stream_basis(teacher: CLIGPT2LMHeadModel, ids: torch.Tensor, reads: list[int], r: int) -> torch.Tensor:
    """Top-r principal directions (uncentred) of the teacher's residual stream entering the blocks READS
    (n_layer: the final LayerNorm)."""
    states = []
    t = teacher.transformer
    hooks = [
        (t.ln_f if i == len(t.h) else t.h[i]).register_forward_hook(
            lambda m, a, o: states.append(a[0].reshape(-1, a[0].shape[-1]))
        )
        for i in reads
    ]
    try:
        teacher(ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    x = torch.cat(states).double()  # (N, d)
    eigvals, eigvecs = torch.linalg.eigh(x.T @ x)  # ascending
    return eigvecs[:, -r:].flip(-1).float()  # (d, r), most energetic direction first


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, min(k, scores.numel())).indices).values


def _fit(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Pad with zero rows (or keep) so that the first dimension is n."""
    if rows.shape[0] >= n:
        return rows[:n]
    return torch.cat([rows, rows.new_zeros(n - rows.shape[0], *rows.shape[1:])])


@torch.no_grad()
def init_narrow_block(src, dst, Q: torch.Tensor, d: int) -> None:
    """Fill narrow block DST (width r) from full-width teacher block SRC through basis Q (d x r)."""
    r = Q.shape[1]
    scale = math.sqrt(d / r)
    ta, sa = src.attn, dst.attn
    for ln in (dst.ln_1, dst.ln_2):  # the teacher's gains and biases are folded into the next layer below
        ln.weight.fill_(1.0)
        ln.bias.zero_()
    # Folded input maps: W' = W diag(gamma) Q sqrt(d/r), b' = b + W beta.
    w_qkv = ta.c_attn.weight * src.ln_1.weight  # (3d, d)
    b_qkv = ta.c_attn.bias + ta.c_attn.weight @ src.ln_1.bias  # (3d,)
    w_qkv_in = (w_qkv @ Q) * scale  # (3d, r)
    hs_t, hs_s, nh_t, nh_s = ta.head_dim, sa.head_dim, ta.n_head, sa.n_head
    Wq, Wk, Wv = w_qkv_in.split(d)  # (d, r) each, rows = nh_t heads x hs_t
    bq, bk, bv = b_qkv.split(d)
    Wo = ta.c_proj.weight  # (d, d): columns = nh_t heads x hs_t
    head_score = torch.stack(
        [Wv[h * hs_t : (h + 1) * hs_t].norm() * Wo[:, h * hs_t : (h + 1) * hs_t].norm() for h in range(nh_t)]
    )
    heads = _top(head_score, nh_s)
    q_rows, k_rows, v_rows, o_cols = [], [], [], []
    for h in heads.tolist():
        sl = slice(h * hs_t, (h + 1) * hs_t)
        qk = _top(Wq[sl].norm(dim=1) * Wk[sl].norm(dim=1), hs_s)  # dims carrying q.k
        vo = _top(Wv[sl].norm(dim=1) * Wo[:, sl].norm(dim=0), hs_s)  # dims carrying v -> output
        q_scale = math.sqrt(hs_s / hs_t) ** 0.5  # split sqrt(hs_s/hs_t) between q and k
        q_rows.append(_fit(torch.cat([Wq[sl][qk], bq[sl][qk, None]], 1) * q_scale, hs_s))
        k_rows.append(_fit(torch.cat([Wk[sl][qk], bk[sl][qk, None]], 1) * q_scale, hs_s))
        v_rows.append(_fit(torch.cat([Wv[sl][vo], bv[sl][vo, None]], 1), hs_s))
        o_cols.append(_fit(Wo[:, sl][:, vo].T, hs_s).T)  # (d, hs_s)
    # Heads the teacher does not have (student wider in heads) stay zero: they start silent.
    q_rows, k_rows, v_rows = (_fit(torch.cat(x), r) for x in (q_rows, k_rows, v_rows))
    qkv = torch.cat([q_rows, k_rows, v_rows])  # (3r, r + 1)
    sa.c_attn.weight.copy_(qkv[:, :-1])
    sa.c_attn.bias.copy_(qkv[:, -1])
    sa.c_proj.weight.copy_(Q.T @ _fit(torch.cat(o_cols, 1).T, r).T)  # (r, r)
    sa.c_proj.bias.copy_(Q.T @ ta.c_proj.bias)
    tm, sm = src.mlp, dst.mlp
    w_fc = (tm.c_fc.weight * src.ln_2.weight) @ Q * scale  # (4d, r)
    b_fc = tm.c_fc.bias + tm.c_fc.weight @ src.ln_2.bias  # (4d,)
    keep = _top(tm.c_fc.weight.norm(dim=1) * tm.c_proj.weight.norm(dim=0), sm.c_fc.out_features)
    sm.c_fc.weight.copy_(_fit(w_fc[keep], sm.c_fc.out_features))
    sm.c_fc.bias.copy_(_fit(b_fc[keep], sm.c_fc.out_features))
    sm.c_proj.weight.copy_(Q.T @ _fit(tm.c_proj.weight[:, keep].T, sm.c_fc.out_features).T)
    sm.c_proj.bias.copy_(Q.T @ tm.c_proj.bias)


@torch.no_grad()
def init_from_teacher(student: CLIGPT2LMHeadModel, teacher: CLIGPT2LMHeadModel, ids: torch.Tensor) -> None:
    """Initialise STUDENT from TEACHER (identity schedule) using calibration batch IDS (N, L)."""
    d = teacher.config.n_embd
    assert teacher.config.layer_widths == [d] * teacher.config.n_layer, "the teacher must be full width"
    assert student.config.n_layer == teacher.config.n_layer and student.config.n_embd == d, (
        "student and teacher shapes differ"
    )
    s, t = student.transformer, teacher.transformer
    for name in ("wte", "wpe", "ln_f"):
        getattr(s, name).load_state_dict(getattr(t, name).state_dict())
    widths = student.config.layer_widths
    for i, w in enumerate(widths):
        if w == d:
            assert student.config.layer_head_dims[i] == teacher.config.layer_head_dims[i], (
                f"block {i}: head size differs"
            )
            missing, unexpected = s.h[i].load_state_dict(t.h[i].state_dict(), strict=False)
            assert not unexpected and set(missing) <= {"mlp.act.alpha"}, f"block {i}: {missing} {unexpected}"
    bases = {}  # narrow block -> its run's basis Q (d, r)
    for start, end in runs(widths, d):
        Q = stream_basis(teacher, ids, list(range(start, end + 1)), widths[start])  # (d, r): into the run and out of it
        for i in range(start, end):
            bases[i] = Q
            init_narrow_block(t.h[i], s.h[i], Q, d)
    # proj[i] maps block i-1's coordinates into block i's: Q_i^T Q_{i-1}, a full-width side (the
    # embedding, ln_f, a protected block) being the identity. Into a run from full width that is
    # Q^T, out of it Q; between two runs of different widths (auto schedules) Q_b^T Q_a.
    for i in range(len(widths) + 1):
        a, b = bases.get(i - 1), bases.get(i)
        if a is b:  # both full width, or inside one run: an identity
            continue
        s.proj[i].weight.copy_(a if b is None else b.T if a is None else b.T @ a)
    student.tie_weights()


def start_student(
    config, teacher: CLIGPT2LMHeadModel, tokens, seed: int, from_teacher: bool = True, init=None
) -> CLIGPT2LMHeadModel:
    """The student a distillation starts from: CONFIG without dropout (a small budget; resumes stay
    bit-exact), built under SEED, and with FROM_TEACHER initialised from TEACHER on the calibration
    batch of SEED + 1 from TOKENS, by INIT(student, batch) (default ``init_from_teacher``; the stock
    students': ``init_stock``). ``compress`` and the searches start from the same student."""
    from clidep.compress import corpus

    for p in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(config, p, 0.0)
    torch.manual_seed(seed)
    student = CLIGPT2LMHeadModel(config)
    if from_teacher:
        calib = torch.from_numpy(corpus.batch(tokens, seed + 1, 0, 16, min(256, config.n_positions)))
        (init or (lambda st, ids: init_from_teacher(st, teacher, ids)))(student, calib)
    return student


def init_stock(student, teacher, kept: list[int], ids) -> None:
    """Initialise STUDENT (a stock config of KEPT's length at width w) from TEACHER on calibration IDS (N, L).

    Full width: the kept blocks, embeddings and final LayerNorm copied, nothing changed. Narrower: one
    residual basis Q (d x w), the top-w principal directions of the teacher's stream entering the kept blocks
    and its final LayerNorm; embeddings wte Q and wpe Q, each block through ``init_narrow_block`` (the
    LayerNorms folded into the next linear layer, re-centring not undone: the approximation), and the final
    LayerNorm, whose gain cannot fold into a tied head, as the diagonal of Q^T diag(gamma) Q times sqrt(d/w)
    with bias beta Q (exact where gamma is a constant).
    """
    s, t = student.transformer, teacher.transformer
    d, w = teacher.config.n_embd, student.config.n_embd
    with torch.no_grad():
        if w == d:
            for name in ("wte", "wpe", "ln_f"):
                getattr(s, name).load_state_dict(getattr(t, name).state_dict())
            for j, i in enumerate(kept):
                s.h[j].load_state_dict(t.h[i].state_dict())
        else:
            Q = stream_basis(teacher, ids, [*kept, len(t.h)], w)  # (d, w)
            s.wte.weight.copy_(t.wte.weight @ Q)
            s.wpe.weight.copy_(t.wpe.weight @ Q)
            for j, i in enumerate(kept):
                init_narrow_block(t.h[i], s.h[j], Q, d)
            s.ln_f.weight.copy_(((Q * t.ln_f.weight[:, None]) * Q).sum(0) * math.sqrt(d / w))
            s.ln_f.bias.copy_(t.ln_f.bias @ Q)
    student.tie_weights()
