"""Which artifact to ship: the report's rows filtered by what the target runs and by the
user's constraints first, then the Pareto front of what is left, then the fastest (ties within
the timing rounds' spread won by the smaller, then the more accurate). Every artifact left out
keeps its reason, so "none meets the constraints" can say why for each."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.device.figures import pareto
from pipeline.formats.targets import Target, target


@dataclass
class Recommendation:
    target: str
    chosen: dict | None
    why: str
    reasons: dict[str, str] = field(default_factory=dict)   # "dir/artifact" -> why it was left out

    def none_line(self) -> str:
        """One line naming each artifact's reason (for the error and the report); a reason that
        many share is given once, with their count (report.json's left_out names them all)."""
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.reasons.items():
            by_reason.setdefault(reason, []).append(name)
        parts = [f"{names[0]}: {reason}" if len(names) == 1 else
                 f"{len(names)} artifacts: {reason}" if len(names) > 3 else f"{', '.join(names)}: {reason}"
                 for reason, names in by_reason.items()]
        return "; ".join(parts)


def row_name(row: dict) -> str:
    return f"{row['dir']}/{row['artifact']}"


def constraint_problem(row: dict, constraints: dict) -> str | None:
    """Why a row that passed its gates still does not meet the user's constraints, or None."""
    drop = constraints.get("max_accuracy_drop")
    latency, size = constraints.get("max_latency_ms"), constraints.get("max_size_kb")
    ram, flash = constraints.get("max_ram_kb"), constraints.get("max_flash_kb")
    if drop is not None and row["metric"] in ("accuracy", "auc") and -row["delta"] > drop + 1e-12:
        return f"{row['metric']} drop {-row['delta'] * 100:.2f} pt > {drop * 100:.2f} pt"
    if latency is not None and (row["p50_ms"] is None or row["p50_ms"] > latency):
        return "not timed" if row["p50_ms"] is None else f"p50 {row['p50_ms']:.3g} ms > {latency:g} ms"
    if size is not None and row["size_kb"] > size:
        return f"size {row['size_kb']:.1f} KiB > {size:g} KiB"
    # a microcontroller budget: only artifacts measured on TFLite Micro can meet it
    if ram is not None and (row.get("arena_kb") is None or row["arena_kb"] > ram):
        return ("no TFLite Micro arena measured" if row.get("arena_kb") is None
                else f"TFLM arena {row['arena_kb']:.1f} KiB > {ram:g} KiB")
    if flash is not None and (row.get("flash_kb") is None or row["flash_kb"] > flash):
        return ("no TFLite Micro flash measured" if row.get("flash_kb") is None
                else f"flash {row['flash_kb']:.1f} KiB > {flash:g} KiB")
    return None


def _left_out(row: dict, where: Target, constraints: dict) -> str | None:
    if not row["passed"]:
        return "failed " + ", ".join(row["failed_gates"])
    return where.cannot_run(row) or constraint_problem(row, constraints)


def recommend(rows: list[dict], constraints: dict, target_name: str | None = None) -> Recommendation:
    """The artifact for ``target_name`` (default: the constraints' target, else ``any``)."""
    from pipeline.device.timing import faster

    where = target(target_name or constraints.get("target") or "any")
    reasons, candidates = {}, []
    for row in rows:
        reason = _left_out(row, where, constraints)
        if reason is None and row["p50_ms"] is None:
            reason = "not timed (run pipeline bench)"
        if reason:
            reasons[row_name(row)] = reason
        else:
            candidates.append(dict(row))
    if not candidates:
        return Recommendation(where.name, None, f"no artifact meets target {where.name} and the constraints",
                              reasons)
    pareto(candidates)  # among what fits: a faster artifact the target cannot run dominates nothing
    front = [r for r in candidates if r["pareto"]]
    fastest = min(front, key=lambda r: (r["p50_ms"], r["size_kb"]))
    tied = [r for r in front if not faster(fastest, r)]  # within the rounds' noise
    chosen = min(tied, key=lambda r: (r["size_kb"], -r["score"], r["p50_ms"]))
    chosen_row = next(r for r in rows if row_name(r) == row_name(chosen))
    for row in candidates:
        if row is not chosen:
            reasons[row_name(row)] = ("slower" if faster(chosen, row) else
                                      "as fast within the rounds' spread, larger or less accurate")
    return Recommendation(where.name, chosen_row, _why(chosen, where, len(candidates), len(tied)), reasons)


def _why(chosen: dict, where: Target, fitting: int, tied: int) -> str:
    micro = f", TFLM arena {chosen['arena_kb']:.1f} KiB" if chosen.get("arena_kb") is not None else ""
    tie = f" ({tied} as fast within the rounds' spread: the smallest)" if tied > 1 else ""
    return (f"fastest{tie} of {fitting} that pass every gate and constraint and that target {where.name} runs "
            f"({where.runs}): p50 {chosen['p50_ms']:.3g} ms on {where.timing}, {chosen['size_kb']:.1f} KiB{micro}")


def export_pick(rows: list[dict], constraints: dict, recommendation: Recommendation) -> Recommendation:
    """What a board's C arrays hold: the recommendation when TFLite Micro runs it, else the
    best artifact for target ``mcu`` under the same constraints."""
    if recommendation.chosen is not None and target("mcu").cannot_run(recommendation.chosen) is None:
        return Recommendation("mcu", recommendation.chosen, "the recommended artifact (TFLite Micro runs it)")
    return recommend(rows, constraints, "mcu")
