"""mTAND query head (Shukla & Marlin, "Multi-Time Attention Networks for Irregularly Sampled Time Series",
ICLR 2021): the encoder–decoder VAE, mTAND-Full, after its multi-time attention encoder.

With ``encoder: {type: mtan}`` the incoming sequence is the attention output at the reference times
(``seq.t``). The head runs the paper's recognition GRU (bidirectional) over it and maps each position
to q(z_r) = N(μ_r, exp(logvar_r)) by an MLP (Linear, ReLU, Linear), so there is one latent vector per
reference time. K samples of z are decoded as the paper does: a bidirectional GRU over the reference
times, multi-time attention from the query times (keys: the reference times; the same
`multi_time_attention` layer as the `mtan` encoder), a linear layer and an MLP to the observation
means. The targets are scored by the bound of `variational`; the KL sums over the valid reference
positions and the latent entries.

Output: ``x`` [B, Q, channels] is the decoding of the posterior mean (deterministic); ``predictive``
holds the K sampled decodings. Defaults follow the authors' interpolation runs (``--k-iwae 5 --norm
--std 0.01``, GRU widths 32 / 50, MLP width 50). Deliberate differences: the time embedding is the learned
`TimeEncoding` (Time2Vec with spread initial frequencies) of ``time_features`` entries (the authors: 128);
the KL is not annealed by default (their ``--kl`` ramps its weight from 0; ``kl_warmup`` does it here);
padded positions of the incoming sequence are skipped by the GRUs and masked in the attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...errors import ConfigError
from ...seq import Seq
from ..layers import TimeEncoding, multi_time_attention
from .query import QUERY_MAX_FREQ, QueryHead, _times
from .variational import KLWeight, LatentBound, LatentConfig, at_least_one, gaussian_kl, with_samples


def packed_gru(rnn: nn.GRU, x: Tensor, valid: Tensor) -> Tensor:
    """A batch-first ``rnn`` over the valid prefix of each row of x [B, L, D] -> [B, L, out], 0 at padding."""
    lengths = valid.sum(1).clamp_min(1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])
    return out.to(x.dtype) * valid[..., None]


class MTAND(QueryHead):
    @dataclass
    class Config(LatentConfig):
        samples: int = 5                 # K (the authors' interpolation runs: --k-iwae 5)
        normalise: bool = True           # per observed target entry (the authors' --norm)
        rec_hidden: int = 32             # width of each direction of the recognition GRU
        gen_hidden: int = 50             # width of each direction of the generative GRU
        hidden: int = 50                 # hidden width of the MLPs to q(z) and to the observations
        heads: int = 1                   # attention heads of the decoder
        time_features: int = 16          # size of the learned time embedding
        key_width: int = 16              # per-head query/key width

        def validate(self, path: str) -> None:
            LatentConfig.validate(self, path)
            at_least_one(self, path, ("rec_hidden", "gen_hidden", "hidden", "heads", "key_width"))
            if self.time_features < 2:
                raise ConfigError(f"{path}.time_features", f"must be >= 2, got {self.time_features}",
                                  got=self.time_features)

    compile_safe = False             # packing reads the lengths on the host
    example = {"channels": 2, "latent": 3, "samples": 2, "rec_hidden": 4, "gen_hidden": 4, "hidden": 6,
               "time_features": 4, "key_width": 4}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.kl_weight = KLWeight(cfg)
        z, r, g = cfg.latent, cfg.rec_hidden, cfg.gen_hidden
        self.recognise = nn.GRU(cfg.d_model, r, batch_first=True, bidirectional=True)
        self.posterior = nn.Sequential(nn.Linear(2 * r, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 2 * z))
        self.generate = nn.GRU(z, g, batch_first=True, bidirectional=True)
        self.time = TimeEncoding(cfg.time_features, QUERY_MAX_FREQ)
        self.query = nn.Linear(cfg.time_features, cfg.heads * cfg.key_width)
        self.key = nn.Linear(cfg.time_features, cfg.heads * cfg.key_width)
        self.mix = nn.Linear(cfg.heads * 2 * g, 2 * g)
        self.readout = nn.Sequential(nn.Linear(2 * g, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.channels))

    def forward(self, seq: Seq) -> Seq:
        cfg = self.cfg
        s, h, e = cfg.samples + 1, cfg.heads, cfg.key_width
        valid = seq.valid()                                                  # [B, L]
        mean, logvar = self.posterior(packed_gru(self.recognise, seq.x, valid)).chunk(2, dim=-1)   # 2 x [B, L, Z]
        std = torch.exp(0.5 * logvar)
        z = with_samples(mean, std, cfg.samples)                             # [S, B, L, Z]: the mean, K samples
        valid_s = valid.repeat(s, 1)                                         # [S B, L]
        states = packed_gru(self.generate, z.flatten(0, 1), valid_s)         # [S B, L, 2G]
        tq = self.queries(seq)                                               # [B, Q]
        (b, n), q = valid.shape, tq.shape[1]
        keys = self.key(self.time(_times(seq))).view(b, n, h, e).repeat(s, 1, 1, 1)     # [S B, L, H, E]
        queries = self.query(self.time(tq)).view(b, q, h, e).repeat(s, 1, 1, 1)         # [S B, Q, H, E]
        att = multi_time_attention(queries, keys, states, valid_s[..., None])           # [S B, Q, H, 2G]
        decoded = self.readout(self.mix(att.flatten(-2))).view(s, b, q, cfg.channels)   # [S, B, Q, C]
        kl = (gaussian_kl(mean, std).sum(-1) * valid.to(mean.dtype)).sum(-1)            # [B]
        bound = LatentBound(decoded[1:], kl, cfg.obs_std, self.kl_weight(), cfg.normalise)
        return Seq(x=decoded[0], t=tq, predictive=bound)                     # [B, Q, C] at z = μ
