"""S4: structured state-space layer with a normal-plus-low-rank state matrix initialised from
HiPPO-LegS (Gu, Goel & Ré, 2022, "Efficiently Modeling Long Sequences with Structured State Spaces").

Per channel, A = Λ - p p* in the eigenbasis of the normal part of HiPPO-LegS (N/2 conjugate pairs
stored), bilinear discretisation with a learned step Δ_h. On a regular grid the convolution kernel comes
from the truncated generating function at the roots of unity, a Cauchy sum with a Woodbury correction
for the rank-one term, and an inverse FFT (`hybridseq.ops.nplr_kernel`). With observation times the
transitions differ per position. ``timed_disc: scaled`` (default) takes the bilinear step with Δ_h · g_l,
in its O(N) Woodbury form; ``timed_disc: zoh`` takes the exact zero-order hold exp(Δ_h g_l A) of the
non-normal A = Λ - p p*, which has no O(N) form (diagonalising HiPPO is ill-conditioned, Gu et al. 2022,
Lemma 3.2): one dense (N+1)² matrix exponential per position and channel, O(N³) each. At long gaps the
bilinear map sends the spectral radius back toward 1 (a silence does not forget); ZOH decays as
exp(-gap · Δ · min|Re λ|). Output: GELU, then a linear layer with a GLU gate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import fft_conv, nplr_kernel
from ...ops.chunkscan import dplr_scan, matrix_scan
from ...ops.scan import segment_length, segmented
from ...seq import Seq
from ..base import choice
from ..layers import own_lr
from .ssm_common import ModalSSMConfig, SSMBlock, gated_output, log_uniform

EXPM_ELEMENTS = 1 << 22     # matrix-exponential entries materialised at once (positions per chunk)
DPLR_SEGMENT = {"cpu": 4, "cuda": 0.25}   # segments of the chunked timed scan, in units of `segment_length`'s
                                          # default; it saves ~50 [S, B, H, N/2] terms per segment


def hippo_legs_nplr(state: int) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvalues Λ, low-rank factor p and input B [N/2] (complex) of HiPPO-LegS, A = V(Λ - p p*)V*.

    LegS: A_nk = -√(2n+1)√(2k+1) (n > k), -(n+1) (n = k), 0 above; B_n = √(2n+1); with P_n = √(n+½),
    A + P Pᵀ = -½ I + S with S skew-symmetric, diagonalised by a unitary V.
    """
    n = torch.arange(state, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    skew = -0.5 * torch.outer(r, r) * torch.sign(n[:, None] - n[None, :])      # [N, N]
    omega, vec = torch.linalg.eigh(-1j * skew.to(torch.complex128))            # S = V diag(iω) V*
    keep = torch.argsort(omega, descending=True)[: state // 2]                  # one of each ± pair
    vh = vec[:, keep].conj().T                                                  # [N/2, N]
    lam = torch.complex(torch.full_like(omega[keep], -0.5), omega[keep])
    p = vh @ torch.sqrt(n + 0.5).to(torch.complex128)
    return lam, p, vh @ r.to(torch.complex128)


def _full(x: Tensor) -> Tensor:
    """The whole state from its stored half: [..., N/2] -> [..., N] with the conjugate pairs appended."""
    return torch.cat([x, x.conj()], dim=-1)


def bilinear_step(h: Tensor, u: Tensor, dt: Tensor, lam: Tensor, p: Tensor, b: Tensor) -> Tensor:
    """h ← (I - Δ/2 A)^{-1} ((I + Δ/2 A) h + Δ b u) for A = Λ - p p*, on the stored half of a conjugate-
    symmetric state: h [B, H, M], u [B, H], dt [B|1, H]; inner products over the whole state are 2 Re(·).
    """
    half = (dt / 2).unsqueeze(-1)                                               # [B|1, H, 1]
    inner = lambda v: 2 * (p.conj() * v).sum(-1, keepdim=True).real            # p* v over all N states
    w = h + half * (lam * h - p * inner(h)) + 2 * half * b * u.unsqueeze(-1)
    d0 = 1 - half * lam                                                         # diagonal part of I - Δ/2 A
    r, s = w / d0, p / d0
    return r - s * (half * inner(r)) / (1 + half * inner(s))                   # Woodbury


class S4(SSMBlock):
    @dataclass
    class Config(ModalSSMConfig):
        """d_state, bidirectional, dt_min, dt_max, dropout, time_unit: the keys every modal SSM has."""
        timed_disc: str = choice("scaled", "zoh")  # with times: bilinear at Δ·gap (O(N)), or exact hold (O(N³))
        scan: str = choice("auto", "chunked", "loop")  # timed passes: chunked (vectorised) or per position;
                                                       # auto: chunked on CUDA tensors and for zoh, else loop

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        h, m = cfg.d_model, cfg.d_state // 2
        lam, p, b = (x.to(torch.cfloat).expand(h, m) for x in hippo_legs_nplr(cfg.d_state))
        self.log_dt = nn.Parameter(torch.log(log_uniform(h, cfg.dt_min, cfg.dt_max)))   # [H]
        self.lam_log_re = nn.Parameter(torch.log(-lam.real).clone())                     # [H, M]
        self.lam_im = nn.Parameter(lam.imag.clone())                                     # [H, M]
        self.p = nn.Parameter(torch.view_as_real(p).clone())                             # [H, M, 2]
        self.b = nn.Parameter(torch.view_as_real(b).clone())                             # [H, M, 2]
        dirs = 2 if cfg.bidirectional else 1
        c = torch.randn(dirs, h, m, dtype=torch.cfloat)
        self.c = nn.Parameter(torch.view_as_real(c))                                     # [dirs, H, M, 2]
        self.d = nn.Parameter(torch.randn(h))
        own_lr(cfg.ssm_lr, self.log_dt, self.lam_log_re, self.lam_im, self.p, self.b)
        self.out = gated_output(h, cfg.dropout)

    def params(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Λ, p, b [H, M] and c [dirs, H, M], complex."""
        lam = torch.complex(-torch.exp(self.lam_log_re), self.lam_im)
        return lam, *(torch.view_as_complex(x) for x in (self.p, self.b, self.c))

    def ssm(self, u: Tensor, seq: Seq) -> Tensor:
        """The SSM alone: u [B, L, H] -> y [B, L, H] (no D skip)."""
        lam, p, b, c = self.params()
        if seq.t is None:                                                 # LTI: Cauchy kernel + FFT conv
            dt, length = torch.exp(self.log_dt), u.shape[1]
            ks = [nplr_kernel(_full(lam), _full(p), _full(b), _full(ck), dt, length) for ck in c]  # [H, L]
            return fft_conv(u.transpose(1, 2), *ks).transpose(1, 2)
        steps = self._held if self.exact_hold(seq) else self._steps
        y = steps(u, self.gaps(seq), c[0])
        if self.cfg.bidirectional:
            y = y + steps(u.flip(1), self.gaps(seq, reverse=True), c[1]).flip(1)
        return y

    def held_transitions(self, gaps: Tensor) -> tuple[Tensor, Tensor]:
        """Exact hold over steps Δ_h gaps: Ā [..., H, N, N] and B̄ [..., H, N] on the whole state, from
        exp([[ΔA, Δb], [0, 0]]) = [[exp(ΔA), A⁻¹(exp(ΔA) - I) b], [0, 1]]."""
        lam, p, b, _ = self.params()
        a = torch.diag_embed(_full(lam)) - _full(p).unsqueeze(-1) * _full(p).conj().unsqueeze(-2)   # [H, N, N]
        aug = torch.cat([a, _full(b).unsqueeze(-1)], dim=-1)                                       # [H, N, N+1]
        aug = torch.cat([aug, torch.zeros_like(aug[..., :1, :])], dim=-2)                         # [H, N+1, N+1]
        dts = (torch.exp(self.log_dt) * gaps.unsqueeze(-1)).to(aug.dtype)                        # [..., H]
        e = torch.linalg.matrix_exp(dts[..., None, None] * aug)
        n = a.shape[-1]
        return e[..., :n, :n], e[..., :n, n]

    def _held(self, u: Tensor, gaps: Tensor, c: Tensor) -> Tensor:
        """Recurrence by the exact hold: u [B, L, H], gaps [B, L] -> [B, L, H], in blocks of positions whose
        transitions are materialised at once; inside a block by `matrix_scan` or, for ``scan: loop``, in turn."""
        batch, length, width = u.shape
        n = self.cfg.d_state
        per_chunk = max(1, EXPM_ELEMENTS // (batch * width * (n + 1) ** 2))
        h = torch.zeros(batch, width, n, dtype=torch.view_as_complex(self.b).dtype, device=u.device)   # [B, H, N]
        ys = []
        for start in range(0, length, per_chunk):
            a_bar, b_bar = self.held_transitions(gaps[:, start:start + per_chunk])    # [B, l, H, N, N], [B, l, H, N]
            x = b_bar * u[:, start:start + per_chunk].unsqueeze(-1)                   # [B, l, H, N]
            if self._chunked_scan(u, hold=True):
                hs = matrix_scan(a_bar, x, h)                                          # [B, l, H, N]
            else:
                states = []
                for k in range(a_bar.shape[1]):
                    h = (a_bar[:, k] @ h.unsqueeze(-1)).squeeze(-1) + x[:, k]
                    states.append(h)
                hs = torch.stack(states, dim=1)
            h = hs[:, -1]
            ys.append((hs * _full(c)).sum(-1).real)
        return torch.cat(ys, dim=1)

    def _chunked_scan(self, u: Tensor, hold: bool) -> bool:
        """Whether the timed pass runs chunked or per position: ``scan`` chunked, or auto on a CUDA tensor or for
        the exact hold (on CPU the bilinear loop measured faster than its chunked form, the dense one slower)."""
        return self.cfg.scan == "chunked" or (self.cfg.scan == "auto" and (u.is_cuda or hold))

    def _steps(self, u: Tensor, gaps: Tensor, c: Tensor) -> Tensor:
        """Recurrence with step Δ_h gap_l: u [B, L, H], gaps [B, L] -> [B, L, H], by the ``scan`` option."""
        if not self._chunked_scan(u, hold=False):
            return self._loop(u, gaps, c)
        lam = self.params()[0]
        h0 = torch.zeros(u.shape[0], *lam.shape, dtype=lam.dtype, device=u.device)           # [B, H, M]
        scale = DPLR_SEGMENT.get(u.device.type, DPLR_SEGMENT["cuda"])
        size = segment_length(2 * u.shape[0] * lam.numel(), u.shape[1], u.device, scale)
        return segmented(self._chunked, h0, u, gaps, segment=size, fixed=(c,))

    def _loop(self, u: Tensor, gaps: Tensor, c: Tensor) -> Tensor:
        """`bilinear_step` at each position in turn."""
        lam, p, b, _ = self.params()
        dts = torch.exp(self.log_dt) * gaps.unsqueeze(-1)                           # [B, L, H]
        h = torch.zeros(*u.shape[::2], lam.shape[-1], dtype=lam.dtype, device=u.device)  # [B, H, M]
        ys = []
        for u_l, dt_l in zip(u.unbind(1), dts.unbind(1)):                          # unbind/stack: O(L) backward
            h = bilinear_step(h, u_l, dt_l, lam, p, b)
            ys.append(2 * (h * c).sum(-1).real)
        return torch.stack(ys, dim=1)

    def _chunked(self, h0: Tensor, u: Tensor, gaps: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """`bilinear_step` over one segment [B, S, H] as the recurrence of `dplr_scan`: expanding the Woodbury
        inverse, h_l = a ⊙ h_{l-1} + s σ_l + e u_l with a = d1/d0, s = p/d0, e = Δ b/d0 (d0, d1 = 1 ∓ Δ/2 Λ) and
        the real feedback σ_l = -κ (2 Re(p*(1 + a) h_{l-1}) + 2 Re(p* e) u_l), κ = (Δ/2) / (1 + (Δ/2) 2 Re(p* s))."""
        lam, p, b, _ = self.params()
        half = (torch.exp(self.log_dt) * gaps.unsqueeze(-1) / 2).unsqueeze(-1)          # Δ/2 [B, S, H, 1]
        inv = 1 / (1 - half * lam)                                                      # 1/d0 [B, S, H, M]
        s, x = p * inv, 2 * half * b * inv * u.unsqueeze(-1)
        inner = lambda v: 2 * (p.conj() * v).sum(-1, keepdim=True).real               # p* v, whole state
        kappa = half / (1 + half * inner(s))                                           # [B, S, H, 1]
        q, r = -2 * kappa * p.conj() * inv, -(kappa * inner(x)).squeeze(-1)             # p*(1 + a) = 2 p*/d0
        h = dplr_scan((1 + half * lam) * inv, s, x, q, r, h0)                           # [B, S, H, M]
        return 2 * torch.einsum("bshm,hm->bsh", h, c).real, h[:, -1]

    def mix(self, u: Tensor, seq: Seq) -> Tensor:
        return self.out(self.ssm(u, seq) + self.d * u)

    def init_state(self, batch: int, device, dtype) -> dict:
        if self.cfg.bidirectional:
            raise RuntimeError("a bidirectional s4 block sees the whole sequence; it has no recurrent mode")
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return {"h": torch.zeros(batch, self.cfg.d_model, self.cfg.d_state // 2, dtype=cdtype, device=device)}

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:
        lam, p, b, c = self.params()
        half = state["h"][..., : self.cfg.d_state // 2]          # the state is conjugate-symmetric: its
        if gap is not None and self.cfg.timed_disc == "zoh":       # first half determines it
            a_bar, b_bar = self.held_transitions(gap)                       # [B, H, N, N], [B, H, N]
            h = (a_bar @ _full(half).unsqueeze(-1)).squeeze(-1) + b_bar * u.unsqueeze(-1)
            return self.out((h * _full(c[0])).sum(-1).real + self.d * u), {"h": h}
        dt = torch.exp(self.log_dt) * (gap.unsqueeze(-1) if gap is not None else 1)      # [B|1, H]
        h = bilinear_step(half, u, dt, lam, p, b)
        y = 2 * (h * c[0]).sum(-1).real
        return self.out(y + self.d * u), {"h": h}
