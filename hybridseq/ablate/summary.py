"""Summary tables of a sweep: per variant, mean ± std over seeds of every test metric, and the costs
(parameter count, train time per epoch, NFE per training forward, peak memory), as Markdown and CSV."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..io import atomic_write_text

COSTS = {"params": "params", "time_per_epoch": "s/epoch", "nfe": "NFE", "peak_mem_mb": "peak MB"}
MEM_KINDS = {"cpu_peak_rss": "peak RSS", "cuda_max_allocated": "CUDA peak"}


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def metric_keys(records: list[dict], headline: str | None = None) -> list[str]:
    """Test metrics of the ok records (headline first; by default the test value of the metric that
    selected the checkpoints), then that validation metric."""
    ok = [r for r in records if r.get("status") == "ok"]
    keys = sorted({k for r in ok for k in r if k.startswith("test_") and k != "test_loss"})
    monitors = sorted({r["monitor"] for r in ok if r.get("monitor")})
    headline = headline or (f"test_{monitors[0].removeprefix('val_')}" if monitors else None)
    if headline in keys:
        keys.remove(headline)
        keys.insert(0, headline)
    return keys + [m for m in monitors if m not in keys]


def summarize(records: list[dict], headline: str | None = None) -> list[dict]:
    """One row per variant (first-seen order): ``runs``, ``failed``, ``tuned`` (the values a ``tune:``
    search chose, else empty) and ``(mean, std)`` per column."""
    keys = metric_keys(records, headline) + list(COSTS)
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["variant"], []).append(r)
    rows = []
    for variant, group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        row = {"variant": variant, "runs": len(ok), "failed": len(group) - len(ok),
               "tuned": next((r["tune"]["params"] for r in group if r.get("tune")), {})}
        for key in keys:
            values = [float(r[key]) for r in ok if isinstance(r.get(key), (int, float))]
            row[key] = _stats(values) if values else None
        rows.append(row)
    return rows


ROW_INFO = ("variant", "runs", "failed", "tuned")


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tuned_keys(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row.get("tuned", {})))


def _fmt(cell, key: str) -> str:
    if cell is None:
        return "—"
    mean, std = cell
    if key in COSTS:
        return f"{mean:,.0f}" if key in ("params", "peak_mem_mb", "nfe") else f"{mean:.2f}"
    return f"{mean:.4f} ± {std:.4f}"


def to_markdown(rows: list[dict], records: list[dict] | None = None) -> str:
    if not rows:
        return "(no results yet)\n"
    keys = [k for k in rows[0] if k not in ROW_INFO]
    tuned = _tuned_keys(rows)
    kinds = {r.get("mem_kind") for r in records or [] if r.get("mem_kind")}
    names = {**COSTS, "peak_mem_mb": f"{MEM_KINDS.get(next(iter(kinds)), 'peak')} MB" if len(kinds) == 1 else "peak MB"}
    head = ["variant", "runs", *tuned, *[names.get(k, k) for k in keys]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        runs = f"{row['runs']}" + (f" (+{row['failed']} failed)" if row["failed"] else "")
        chosen = [_value(row["tuned"][k]) if k in row.get("tuned", {}) else "—" for k in tuned]
        lines.append("| " + " | ".join([row["variant"], runs, *chosen, *[_fmt(row[k], k) for k in keys]]) + " |")
    failed = [r for r in records or [] if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed runs:"]
        lines += [f"- {r['variant']} seed {r['seed']} ({r['run_id']}): {r['error']['type']}: "
                  f"{(r['error']['message'] or '').splitlines()[0] if r['error']['message'] else ''}" for r in failed]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ROW_INFO]
    tuned = _tuned_keys(rows)
    writer = csv.writer(buffer)
    writer.writerow(["variant", "runs", "failed", *tuned, *[f"{k}_{s}" for k in keys for s in ("mean", "std")]])
    for row in rows:
        cells = [row["variant"], row["runs"], row["failed"], *[row.get("tuned", {}).get(k, "") for k in tuned]]
        for k in keys:
            cells += ["", ""] if row[k] is None else [f"{row[k][0]:.6g}", f"{row[k][1]:.6g}"]
        writer.writerow(cells)
    return buffer.getvalue()


def write_summary(out_dir, records: list[dict], headline: str | None = None, note: str = "") -> str:
    """Write ``summary.md`` (the table, then ``note``) and ``summary.csv`` into ``out_dir``; returns the
    Markdown."""
    rows = summarize(records, headline)
    text = to_markdown(rows, records) + (f"\n{note}\n" if note else "")
    atomic_write_text(Path(out_dir) / "summary.md", text)
    atomic_write_text(Path(out_dir) / "summary.csv", to_csv(rows))
    return text
