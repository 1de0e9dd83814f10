"""The chaos run's report: faults (counts by kind, each with its time), submits by HTTP status,
job outcomes, retries spent, and each invariant's PASS/FAIL, as markdown (printed and written
to ``--report``)."""

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.faults import KINDS, Fault
from tests.chaos.invariants import Verdict
from tests.chaos.load import StatusLog, Submit


@dataclass
class Report:
    seed: int
    seconds: float
    started: str
    faults: list[Fault]
    submits: list[Submit]
    log: StatusLog
    dead: list[dict]
    verdicts: list[Verdict]
    self_exits: list[tuple[float, str, int]]
    killed_uploads: list[dict]
    settle_seconds: float
    requested_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.verdicts)

    def markdown(self) -> str:
        out = [f"# pixq chaos run — seed {self.seed}", "",
               f"Started {self.started}, load and faults for {self.seconds:.0f} s, settled in "
               f"{self.settle_seconds:.0f} s. Replay: `python -m tests.chaos --seconds {self.requested_seconds:.0f} "
               f"--seed {self.seed}` (the fault sequence replays; timings under load differ).", ""]
        for key, value in self.extra.items():
            out.append(f"- {key}: {value}")
        out += ["", "## Faults injected", "", "| kind | count |", "|---|---|"]
        counts = Counter(fault.kind for fault in self.faults)
        out += [f"| {kind} | {counts.get(kind, 0)} |" for kind in KINDS]
        out += [f"| **total** | {len(self.faults)} |", "",
                "| at (s) | kind | what | whole again after (s) | submits during it: answered / 503 / no answer "
                "| recovery error |", "|---|---|---|---|---|---|"]
        for f in self.faults:
            during = [s.status for s in self.submits if f.at <= s.at <= f.at + f.took]
            out.append(f"| {f.at:.0f} | {f.kind} | {f.detail} | {f.took:.1f} | {len(during)} / "
                       f"{during.count(503)} / {during.count(-1)} | {f.error or ''} |")
        if self.self_exits:
            out += ["", "Workers that exited on their own (restarted by the supervisor): "
                    + ", ".join(f"{name} rc={code} at {at:.0f} s" for at, name, code in self.self_exits)]
        out += ["", "## Submits", "", "| HTTP status | requests |", "|---|---|"]
        by_status = Counter(s.status for s in self.submits)
        out += [f"| {'no answer' if status == -1 else status} | {n} |" for status, n in sorted(by_status.items())]
        codes = Counter(s.code for s in self.submits if s.status == 503)
        if codes:
            out += ["", "503 answers by error code: " + ", ".join(f"{c} {n}" for c, n in codes.most_common())]
        kinds = Counter(s.kind for s in self.submits)
        resent = sum(1 for s in self.submits if s.resends)
        out += ["", f"Requests by kind: {', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}; "
                f"{resent} needed a resend (same Idempotency-Key, another API) after no answer.",
                f"Killed uploads: {len(self.killed_uploads)} "
                + "; ".join(f"api-{u['api']} at {u['at']:.0f} s after {u['sent'] // 1024} KiB: {u['answer']}"
                            for u in self.killed_uploads)]
        jobs = self.log.seen
        latest = Counter(self.log.latest(job) for job in jobs)
        bad = sum(1 for is_bad in self.log.bad.values() if is_bad)
        attempts = [h[-1][2] for h in jobs.values() if h]
        retried = sum(1 for a in attempts if a > 1)
        out += ["", "## Jobs", "",
                f"- accepted: {len(jobs)} ({len(jobs) - bad} good, {bad} bad inputs on purpose)",
                f"- completed: {latest.get('completed', 0)}, failed: {latest.get('failed', 0)}, "
                f"not terminal: {len(jobs) - latest.get('completed', 0) - latest.get('failed', 0)}",
                f"- DLQ entries: {len(self.dead)}",
                f"- retries spent: {sum(max(0, a - 1) for a in attempts)} extra attempts over {retried} jobs",
                f"- status reads: {self.log.reads}", "",
                "## Invariants", "", "| invariant | verdict | evidence |", "|---|---|---|"]
        out += [f"| {v.name} | {'PASS' if v.ok else 'FAIL'} | {v.summary} |" for v in self.verdicts]
        for verdict in self.verdicts:
            if verdict.details:
                out += ["", f"### {verdict.name}: details", ""] + [f"- {line}" for line in verdict.details]
        out += ["", f"**{'PASS' if self.ok else 'FAIL'}**", ""]
        return "\n".join(out)

