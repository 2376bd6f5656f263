"""results.md of `python -m benchmarks.gpu_suite`: the JSON's numbers as
ratio tables a reader can scan (every number here is also in results.json)."""
from __future__ import annotations

from typing import Any

OP_PEERS = ("triton", "eager", "sdpa", "flex", "compile")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    env = data.get("environment", {})
    verdict = data.get("verdict", {"status": "?", "reasons": []})
    lines = [f"# GPU suite: {env.get('device', '?')} — {verdict['status'].upper()}", ""]
    lines += [f"- mode: {data['mode']}; started {data['started_utc']}; wall {data.get('wall_s', '—')} s of a "
              f"{data['budget_s']} s budget", f"- command: `{data['command']}`"]
    for reason in verdict["reasons"]:
        lines.append(f"- {verdict['status'].upper()}: {reason}")
    lines += ["", "## Environment", ""]
    flat = {k: v for k, v in env.items() if k != "git"}
    git = env.get("git", {})
    flat["git commit"] = f"{git.get('commit')} ({'dirty' if git.get('dirty') else 'clean' if git.get('dirty') is False else git.get('source')})"
    lines += _table(["key", "value"], [[k, str(v)] for k, v in flat.items()])
    sections = data.get("sections", {})
    lines += ["", *_kernel_tests(sections.get("kernel_tests")), "", *_ops(sections.get("ops")), "",
              *_train(sections.get("train")), "", *_skips(data.get("skipped", [])), ""]
    if data.get("errors"):
        lines += ["## Errors", ""] + [f"- {e['section']} {e['item']}: {e['reason']}" for e in data["errors"]] + [""]
    return "\n".join(lines)


def _kernel_tests(sec: dict[str, Any] | None) -> list[str]:
    lines = ["## Kernel tests", ""]
    if not sec or "counts" not in sec:
        return lines + [f"status: {sec.get('status') if sec else 'not run'}"]
    counts = ", ".join(f"{v} {k}" for k, v in sec["counts"].items())
    lines += [f"**{sec['status'].upper()}** — {counts}; {sec['wall_s']} s (budget {sec['budget_s']} s)"
              + ("; TIMED OUT" if sec["timed_out"] else ""), "", f"- rule: {sec['rule']}",
              f"- command: `{sec['command']}`"]
    lines += [f"- not run here: {path} — {why}" for path, why in sec.get("not_run_here", {}).items()]
    if sec.get("deselected"):
        lines.append(f"- deselected: {sec['deselected']} (see the command's -m / -k)")
    lines += [f"- failed: {name}" for name in sec["failed"][:30]]
    lines += [f"- skipped: {s['test']} — {s['reason']}" for s in sec["skipped"][:30]]
    lines += [f"- verdict: {r}" for r in sec["verdict_reasons"]]
    return lines


def _ops(sec: dict[str, Any] | None) -> list[str]:
    lines = ["## Attention ops at the model's per-block shapes", ""]
    if not sec or "ratios" not in sec:
        return lines + [f"status: {sec.get('status') if sec else 'not run'}"]
    lines += [f"{sec['dtype']}, batch {sec['batch']}, input T={sec['frames']}; timer: {sec['timer']}; "
              f"compile backend {sec['compile_backend']}. Times in ms (median); `x eager` = eager time / "
              "Triton time; `vs best` = best other peer's time / Triton time.", ""]
    calls = {c["id"]: c["calls_per_forward"] for c in sec["cases"]}
    notes = {(r["case"], r["mode"], r["peer"]): r for r in sec["results"]}
    for mode in ("fwd", "fwd+bwd"):
        rows = []
        for row in (r for r in sec["ratios"] if r["mode"] == mode):
            cells = [row["case"], str(calls.get(row["case"], "?"))]
            for peer in OP_PEERS:
                cell = _ms(row["ms"].get(peer))
                entry = notes.get((row["case"], mode, peer), {})
                if entry.get("status") == "ok" and not entry.get("agrees", True):
                    cell += " (WRONG)"
                cells.append(cell)
            cells.append(_x(row["speedup_vs_eager"].get("triton")))
            best = row.get("best_peer")
            cells.append(f"{_x(row.get('triton_vs_best_peer'))} ({best})" if best else "—")
            rows.append(cells)
        lines += [f"### {mode}", ""]
        lines += _table(["case", "calls/fwd", *OP_PEERS, "triton x eager", "triton vs best"], rows) + [""]
    per_step = sec.get("per_step", {})
    if per_step:
        lines += ["### Attention time per training step (fwd+bwd of every call, ms)", ""]
        peers = sorted({p for d in per_step.values() for p in d})
        lines += _table(["dataset", *peers], [[d, *(_ms(v.get(p)) for p in peers)] for d, v in per_step.items()])
        lines += ["", "(a peer appears only where it ran on every case of that dataset)"]
    return lines


def _train(sec: dict[str, Any] | None) -> list[str]:
    lines = ["## Training step (forward + backward + SGD)", ""]
    if not sec or "ratios" not in sec:
        return lines + [f"status: {sec.get('status') if sec else 'not run'}"]
    lines += [f"{sec['clips_per_step']} clips x {sec['persons']} persons per step (a sample = a clip), "
              f"T={sec['frames']}, channels "
              f"{sec['channels']}; {sec['optimizer']}; timer: {sec['timer']}. `x baseline` = the same arch's "
              "eager-mode fp32 eager-kernel step time / this one; `vs MS-G3D` = AMANet time / MS-G3D time "
              "(same mode and precision).", ""]
    ratios = {r["config"]: r for r in sec["ratios"]}
    rows = []
    for r in sec["results"]:
        if r.get("status") != "ok":
            continue
        ratio = ratios.get(r["config"], {})
        rows.append([r["arch"], r["dataset"], r["mode"], r["precision"], r["kernels"], _ms(r["ms_per_step"]),
                     f"{r['samples_per_s']:.1f}", "—" if r["peak_GiB"] is None else f"{r['peak_GiB']:.2f}",
                     f"{r['first_step_s']:.1f}", _x(ratio.get("speedup_vs_baseline")),
                     _x(ratio.get("time_vs_msg3d")),
                     f"{r['graph_breaks']} / {r['graphs']}" if "graphs" in r else "—"])
    lines += _table(["arch", "dataset", "mode", "precision", "kernels", "ms/step", "samples/s", "peak GiB",
                     "first step s", "x baseline", "vs MS-G3D", "graph breaks / graphs"], rows)
    return lines


def _skips(skipped: list[dict[str, Any]]) -> list[str]:
    lines = ["## Skipped (with reasons)", ""]
    if not skipped:
        return lines + ["nothing"]
    grouped: dict[tuple[str, str], list[str]] = {}
    for s in skipped:
        grouped.setdefault((s["section"], s["reason"]), []).append(s["item"])
    for (section, reason), items in grouped.items():
        shown = ", ".join(items[:4]) + (f", … ({len(items)} in all)" if len(items) > 4 else "")
        lines.append(f"- {section}: {reason} — {shown}")
    return lines
