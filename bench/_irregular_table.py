"""The irregular benchmark's markdown table: accuracy per problem, the average, the paired gap to the
reference transformer, and the cost columns."""
from __future__ import annotations

import statistics

REFERENCE = "ref:transformer"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gap(by: dict, config: str, drop: float, problems: list[str]) -> str:
    """The configuration's average over ``problems`` minus the reference's, seed by seed (the two saw the
    same tensors), as ``mean ± standard error (seeds)`` over the seeds both ran on every problem."""
    def averages(name: str) -> dict[int, float]:
        runs = by.get((name, drop), {})
        per_seed: dict[int, list[float]] = {}
        for problem in problems:
            for r in runs.get(problem, []):
                if r["status"] == "ok":
                    per_seed.setdefault(r["seed"], []).append(100 * r["accuracy"])
        return {s: statistics.fmean(a) for s, a in per_seed.items() if len(a) == len(problems)}

    ours, ref = averages(config), averages(REFERENCE)
    gaps = [ours[s] - ref[s] for s in sorted(ours.keys() & ref.keys())]
    if config == REFERENCE or not gaps:
        return "—"
    if len(gaps) == 1:
        return f"{gaps[0]:+.1f} (1)"
    return f"{statistics.fmean(gaps):+.1f} ± {statistics.stdev(gaps) / len(gaps) ** 0.5:.1f} ({len(gaps)})"


def table(records: list[dict], configs: list[str], problems: list[str], drops: list[float], seeds: int) -> str:
    """Markdown: accuracy (%) mean ± std over seeds per problem and drop, the average per drop, the paired
    gap to the reference, costs. A cell over fewer or more than ``seeds`` runs says how many it has, e.g.
    ``(3)``."""
    by: dict = {}
    for r in records:
        by.setdefault((r["config"], r["drop"]), {}).setdefault(r["problem"], []).append(r)
    lines = []
    for drop in drops:
        head = ["config", *problems, "average", "vs ref", "params", "s/epoch", "NFE", "act. MiB"]
        lines += [f"\n**drop {drop:.0%}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for config in configs:
            cells, means, costs = [], [], {}
            for problem in problems:
                runs = by.get((config, drop), {}).get(problem, [])
                ok = [r for r in runs if r["status"] == "ok"]
                if ok:
                    m, s = mean_std([100 * r["accuracy"] for r in ok])
                    cells.append(f"{m:.1f} ± {s:.1f}" + (f" ({len(ok)})" if len(ok) != seeds else ""))
                    means.append(m)
                elif runs:
                    proj = max(r.get("projected_s", 0) for r in runs)
                    cells.append(f"skipped ({proj / 3600:.1f} h, {runs[0]['act_mib']:.0f} MiB)")
                else:
                    cells.append("—")
                for r in ok:
                    costs.setdefault(problem, r)
            avg = f"{statistics.fmean(means):.1f}" if len(means) == len(problems) else (
                f"({statistics.fmean(means):.1f} on {len(means)})" if means else "—")
            first = next(iter(costs.values()), None)
            cost_cells = ([f"{first['params']:,}", f"{statistics.fmean(r['s_per_epoch'] for r in costs.values()):.2f}",
                           f"{statistics.fmean(r['nfe'] for r in costs.values()):.0f}",
                           f"{max(r['act_mib'] for r in costs.values()):.0f}"] if first else ["—"] * 4)
            gap = paired_gap(by, config, drop, problems)
            lines.append("| " + " | ".join([config, *cells, avg, gap, *cost_cells]) + " |")
    return "\n".join(lines)
