"""Pictures of pre-copy live migration (Clark et al., NSDI 2005), drawn from what a migration recorded.

    precopy_diagram(result)        the algorithm as a state diagram; its edges carry this run's rounds
                                   and the stop condition that ended them
    timeline(result)               the rounds as bars on a time axis, the stop-and-copy as the downtime,
                                   the switch-over to the destination
    rounds_table(result)           per round: pages sent, pages skipped, pages dirty at its end, their
                                   ratio, seconds, link rate
    rounds_plot(results)           pages sent, skipped and dirtied per round, one panel per workload
    rate_plot(results)             the rate at which the guest dirtied memory, round by round, against
                                   the link's rate
    downtime_plot(sweep)           downtime against the writable working set, with the time the link
                                   needs for that many pages
    transcript(result)             the "seq n" lines the remote peer received, the switch-over marked,
                                   gaps and repeats counted
    digests(result)                the source's and the destination's memory digests at switch-over
    conditions(stop)               the rules of a StopConditions preset (Xen's, Clark's, QEMU's) in words
    Progress(stop, memory_pages)   a progress bar per stop condition, moved by each round as it ends
    clark_table(ours)              Clark et al.'s downtimes beside ours

A result is vmkit.migration's MigrationResult: `rounds` (records with number, pages_sent,
pages_skipped, pages_dirtied, seconds, mbit), `downtime`, `total_time`, `stop_reason`, `transcript`, `switch_seq`
and the two digests. Nothing here migrates: every number drawn is one the engine recorded.

Used by lesson 08.

Long because: lesson 08 draws one migration many ways (the algorithm, a table, a timeline, three
plots, the transcript) and replays it in three widgets, all with the colours, page states and
stop-condition words defined once at the top.
"""
import html

import ipywidgets as w
from IPython.display import display
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ..migration import XEN
from .diagram import Diagram, Plot, Table
from .kvm import Banner

PAGE = 4096
# one colour per part of the story, in every picture
SEND, DIRTY, PAUSED, DEST, LINK = "#1565c0", "#ef6c00", "#c62828", "#2e7d32", "#555555"
WORKLOAD_COLOURS = ["#1565c0", "#2e7d32", "#c62828", "#6a1b9a", "#00838f", "#795548"]
# vmkit.migration's stop reasons -> the words of the rule (Xen's, Clark's, QEMU's; vmkit.migration.precopy)
STOP_RULES = {
    "rate limit": "the adaptive link already runs at its maximum rate and the last round sent more pages than "
                  "the one before (Xen)",
    "max rounds": "the maximum number of live rounds was reached (Xen: 29)",
    "few pages sent": "the last round sent or skipped fewer pages than the threshold (Xen: 50)",
    "sent 3x memory": "more than 3x the guest's memory has been sent (Xen)",
    "rate above maximum": "the rate calculated for the next round, the dirty rate + 50 Mbit/s, is above the "
                          "link's maximum (Clark et al.)",
    "little left": "less than 256 KiB (64 pages) is left to send (Clark et al.)",
    "fits the downtime limit": "what is left would cross the link within the downtime limit (QEMU)",
}


def conditions(stop):
    """[(stop reason, the rule in words)] for each rule a StopConditions uses, in the order it checks them."""
    rules = [("rate limit", "the adaptive link at its maximum and this round sent more than the last"
              if stop.rate_limit else None),
             ("max rounds", f"{stop.max_rounds} rounds done" if stop.max_rounds is not None else None),
             ("few pages sent", f"fewer than {stop.min_pages} pages sent or skipped in the last round"
              if stop.min_pages is not None else None),
             (f"sent {stop.max_factor:g}x memory" if stop.max_factor is not None else "",
              f"more than {stop.max_factor:g}x memory sent" if stop.max_factor is not None else None),
             ("rate above maximum", "the next round's rate (dirty rate + 50 Mbit/s) above the link's maximum"
              if stop.rate_above_max else None),
             ("little left", f"fewer than {stop.min_remaining} pages left dirty"
              if stop.min_remaining is not None else None),
             ("fits the downtime limit", f"the dirty pages would cross within {stop.downtime_limit * 1e3:g} ms"
              if stop.downtime_limit is not None else None)]
    return [(key, text) for key, text in rules if text]


def _ms(seconds):
    return f"{seconds * 1e3:,.1f} ms"


def _n(count, thing):
    return f"{count:,} {thing}" + ("" if count == 1 else "s")


def dirty_mbit(record):
    """The rate at which the guest dirtied memory during one round, in Mbit/s (pages written at
    least once while the round's pages were on the wire, over the round's time)."""
    return record.pages_dirtied * PAGE * 8 / record.seconds / 1e6 if record.seconds else 0.0


def phases(result):
    """(start, seconds, what) of each stretch of a migration, on one time axis from the start:
    the rounds, then the stop-and-copy, whose length is the downtime."""
    out, t = [], 0.0
    for r in result.rounds:
        out.append((t, r.seconds, f"round {r.number}"))
        t += r.seconds
    out.append((t, result.downtime, "stop-and-copy"))
    return out


# --- the algorithm --------------------------------------------------------------------------------------
def precopy_diagram(result=None, stop=None):
    """Pre-copy as a state diagram: warm-up, the full first round, the rounds that resend what was
    dirtied, the check of the stop conditions, stop-and-copy, activation. With a `result`, the
    edges carry how often this migration took them and the condition that stopped it is red."""
    rounds = len(result.rounds) if result is not None else None
    reason = getattr(result, "stop_reason", None)
    memory = (result.rounds[0].pages_sent + result.rounds[0].pages_skipped
              if result is not None and result.rounds else 1024)
    stop = XEN if stop is None else stop
    rules = conditions(stop)
    rows = ""
    for key, text in rules:
        cell = html.escape(text)
        rows += (f'<TR><TD ALIGN="LEFT" BGCOLOR="#ffcdd2"><B>{cell}</B></TD></TR>' if key == reason else
                 f'<TR><TD ALIGN="LEFT">{cell}</TD></TR>')
    caption = (f"pre-copy live migration (Clark et al., 2005), with {stop.name}'s stop conditions" if result is None else
               f"pre-copy in this run: {_n(rounds, 'round')}, stopped because {STOP_RULES.get(reason, reason)}; "
               f"downtime {_ms(result.downtime)}")
    g = Diagram("precopy", caption=caption, text=precopy_text(result, [text for _, text in rules], reason, stop))
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.35", ranksep="0.45")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11", fillcolor="#e3f2fd")
    g.attr("edge", fontname="Helvetica", fontsize="10")
    g.node("warm", "the guest runs\non the source", fillcolor="#eeeeee")
    g.node("full", f"round 1: send all\n{memory} pages,\ndirty logging on")
    g.node("again", "round n: send the pages\ndirtied during round n-1\n(the guest keeps running)"
                    + ("\nskip those dirtied again" if stop.skip else ""))
    g.node("check", f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="3"><TR><TD><B>stop?</B> ({html.escape(stop.name)}: any of)</TD></TR>'
                    f'{rows}</TABLE>>', shape="box", fillcolor="#fff8e1", style="rounded,filled", margin="0.05")
    g.node("stopcopy", "stop-and-copy: pause the guest,\nsend the last dirty pages,\nvCPU and device state",
           fillcolor="#ffcdd2")
    g.node("dest", "activate on the\ndestination; the\nsource is discarded", fillcolor="#c8e6c9")
    hot = {"color": PAUSED, "fontcolor": PAUSED, "penwidth": "2.2"} if result is not None else {}
    g.edge("warm", "full", label=" migrate ")
    g.edge("full", "check")
    loops = max(rounds - 1, 0) if rounds is not None else None
    g.edge("check", "again", label=" no " + (f"×{loops} " if loops is not None else ""), constraint="false")
    g.edge("again", "check")
    g.edge("check", "stopcopy", label=" yes" + (f": {reason} " if reason else " "), **hot)
    g.edge("stopcopy", "dest", label=" switch-over ")
    return g


def precopy_text(result, conditions, reason, stop):
    lines = ["Pre-copy: the guest runs on the source; round 1 sends every page with dirty logging on;",
             "each later round resends the pages the guest dirtied during the round before, while it keeps running"
             + ("; before each batch it peeks at the dirty log and skips pages dirtied again since the round began"
                if stop.skip else "") + ";",
             f"after each round {stop.name}'s stop conditions are checked: " + "; ".join(conditions) + ".",
             "When one holds: stop-and-copy (the guest is paused, the last dirty pages and the vCPU and device state "
             "are sent), then the destination is activated and the source discarded."]
    if result is not None:
        lines.append(f"This run: {_n(len(result.rounds), 'round')}, stopped by '{reason}' "
                     f"({STOP_RULES.get(reason, reason)}); {result.pages_sent:,} pages sent in all; "
                     f"downtime {_ms(result.downtime)}, total {_ms(result.total_time)}.")
    return "\n".join(lines)


# --- one migration ----------------------------------------------------------------------------------------
def rounds_table(result):
    """One row per round: pages sent, pages skipped (dirtied again before their batch went), pages
    dirty at the round's end (the next round's), the ratio of those to the round's pages (the factor
    by which the next round is smaller, or not), seconds on the link, the link's rate, the dirty rate;
    then the stop-and-copy."""
    rows = [[r.number, f"{r.pages_sent:,}", f"{r.pages_skipped:,}", f"{r.pages_dirtied:,}", shrink(r),
             f"{r.seconds * 1e3:,.2f}", f"{r.mbit:,.0f}", f"{dirty_mbit(r):,.0f}"] for r in result.rounds]
    last = getattr(result, "final_pages", result.rounds[-1].pages_dirtied if result.rounds else 0)
    rows.append(["stop-and-copy", f"{last:,}", "", "0 (paused)", "", f"{result.downtime * 1e3:,.2f}", "", ""])
    return Table(["round", "pages sent", "skipped", "dirty at its end", "dirty ÷ its pages", "ms", "link Mbit/s",
                  "dirty Mbit/s"],
                 rows,
                 f"stopped by '{result.stop_reason}': {STOP_RULES.get(result.stop_reason, '')}. "
                 f"{result.pages_sent:,} pages sent in all; downtime {_ms(result.downtime)}; total time "
                 f"{_ms(result.total_time)} (simulated link)")


def shrink(record):
    """Pages dirty at a round's end over the pages it had to send (sent or skipped): below 1 the next
    round is smaller (the dirty set shrinks), at 1 or above it is not."""
    pages = record.pages_sent + record.pages_skipped
    return f"{record.pages_dirtied / pages:.2f}" if pages else ""


def timeline(result, title=None):
    """The migration on a time axis: where the guest runs (source, paused, destination) and what
    the link carries (each round, then the stop-and-copy)."""
    spans = phases(result)
    end = spans[-1][0] + spans[-1][1]
    after = max(end * 0.08, 1e-4)
    fig, ax = plt.subplots(figsize=(10, 2.9), facecolor="white")
    ms = 1e3
    # lane 1: the link
    for k, (start, seconds, what) in enumerate(spans[:-1]):
        ax.barh(1, seconds * ms, left=start * ms, height=0.5, color=SEND if k % 2 == 0 else "#64b5f6",
                edgecolor="white")
        if seconds > end * 0.06:
            r = result.rounds[k]
            ax.text((start + seconds / 2) * ms, 1, f"{r.number}\n{r.pages_sent}", ha="center", va="center",
                    color="white", fontsize=8)
    stop_start, downtime, _ = spans[-1]
    ax.barh(1, max(downtime, end * 0.003) * ms, left=stop_start * ms, height=0.5, color=PAUSED)
    # lane 0: the guest
    ax.barh(0, stop_start * ms, left=0, height=0.5, color="#90a4ae")
    ax.barh(0, max(downtime, end * 0.003) * ms, left=stop_start * ms, height=0.5, color=PAUSED)
    ax.barh(0, after * ms, left=end * ms, height=0.5, color=DEST)
    ax.axvline(end * ms, color="black", lw=1, ls="--")
    ax.text(end * ms, 1.45, " switch-over", fontsize=9, va="bottom")
    ax.text(stop_start * ms / 2, 0, "runs on the source", ha="center", va="center", fontsize=9)
    ax.text((end + after / 2) * ms, 0.3, "destination", ha="center", va="bottom", fontsize=9, color=DEST)
    ax.annotate(f"downtime {_ms(result.downtime)}", xy=((stop_start + downtime / 2) * ms, -0.25),
                xytext=(stop_start * ms, -0.75), fontsize=9, color=PAUSED, ha="right",
                arrowprops={"arrowstyle": "->", "color": PAUSED})
    ax.set_yticks([0, 1], ["the guest", "the link"])
    ax.set_ylim(-1.0, 1.8)
    ax.set_xlim(0, (end + after) * ms * 1.02)
    ax.set_xlabel("ms since the migration started (simulated link)")
    ax.set_title(title or f"{_n(len(result.rounds), 'round')} (numbered, with the pages each sent), stopped by "
                          f"'{result.stop_reason}'; then stop-and-copy", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return Plot(fig, timeline_text(result))


def timeline_text(result):
    lines = [f"{start * 1e3:8.2f} ms  {what}: " + (f"{r.pages_sent:,} pages at {r.mbit:,.0f} Mbit/s for "
             f"{seconds * 1e3:.2f} ms, {r.pages_skipped:,} skipped, {r.pages_dirtied:,} dirty at its end"
             if r is not None else
             f"the guest is paused for {seconds * 1e3:.2f} ms (the downtime)")
             for (start, seconds, what), r in zip(phases(result), [*result.rounds, None])]
    lines.append(f"{(phases(result)[-1][0] + result.downtime) * 1e3:8.2f} ms  switch-over: "
                 f"the guest runs on the destination")
    return "\n".join(lines)


# --- several migrations -----------------------------------------------------------------------------------
def rounds_plot(results, min_pages=50):
    """`results` maps a name (a workload) to a MigrationResult. One panel each: the pages sent and
    the pages skipped (stacked bars) and the pages dirty at the round's end (line) per round, on a
    log scale, with Xen's threshold for 'few pages sent' (sent + skipped) as a dashed line."""
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 0.6, 3.6), sharey=True,
                             facecolor="white", squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results[name]
        numbers = [x.number for x in r.rounds]
        sent = [max(x.pages_sent, 0.8) for x in r.rounds]
        ax.bar(numbers, sent, color=SEND, label="pages sent")
        ax.bar(numbers, [x.pages_skipped for x in r.rounds], bottom=sent, color="#90caf9", label="pages skipped")
        ax.plot(numbers, [max(x.pages_dirtied, 0.8) for x in r.rounds], "o-", color=DIRTY,
                label="dirty at the round's end")
        ax.axhline(min_pages, color=LINK, ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(0.5, memory_top(results) * 2)
        ax.set_title(f"{name}: stopped by '{r.stop_reason}'\ndowntime {_ms(r.downtime)}", fontsize=10)
        ax.set_xlabel("round")
        ax.set_xticks(numbers if len(numbers) <= 12 else numbers[::max(len(numbers) // 8, 1)])
    axes[0][0].set_ylabel("pages (log scale)")
    axes[0][0].text(0.02, min_pages * 1.15, f"{min_pages} pages", transform=axes[0][0].get_yaxis_transform(),
                    fontsize=8, color=LINK, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return Plot(fig, rounds_text(results))


def memory_top(results):
    return max((x.pages_sent + x.pages_skipped for r in results.values() for x in r.rounds), default=1024)


def rounds_text(results):
    lines = []
    for name, r in results.items():
        per_round = ", ".join(f"{x.pages_sent}/{x.pages_skipped}/{x.pages_dirtied}" for x in r.rounds)
        lines.append(f"{name}: {_n(len(r.rounds), 'round')} (pages sent/skipped/dirty: {per_round}); stopped by "
                     f"'{r.stop_reason}'; downtime {_ms(r.downtime)}, {r.pages_sent:,} pages sent in all.")
    return "\n".join(lines)


def rate_plot(results):
    """The guest's dirty rate in each round (pages dirtied over the round's time, in Mbit/s) as a
    solid line, the link's rate in that round as a dashed line of the same colour: a guest whose
    line stays above the link's can never be caught up with."""
    fig, ax = plt.subplots(figsize=(8, 3.6), facecolor="white")
    for k, (name, r) in enumerate(results.items()):
        colour = WORKLOAD_COLOURS[k % len(WORKLOAD_COLOURS)]
        numbers = [x.number for x in r.rounds]
        ax.plot(numbers, [max(dirty_mbit(x), 0.1) for x in r.rounds], "o-", color=colour, label=f"{name}: dirty rate")
        ax.plot(numbers, [x.mbit for x in r.rounds], "--", color=colour, alpha=0.7, label=f"{name}: link rate")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("Mbit/s (log scale)")
    ax.set_title("how fast the guest dirties memory, against how fast the link carries it", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return Plot(fig, rate_text(results))


def rate_text(results):
    lines = []
    for name, r in results.items():
        per_round = ", ".join(f"{dirty_mbit(x):,.0f} vs {x.mbit:,.0f}" for x in r.rounds)
        lines.append(f"{name} (dirty Mbit/s vs link Mbit/s, per round): {per_round}; stopped by '{r.stop_reason}'.")
    return "\n".join(lines)


def downtime_plot(sweep, mbit=None):
    """`sweep` is [(writable working set in pages, MigrationResult)]. The downtime against the
    working set; with `mbit`, also the time that link needs to send that many pages."""
    sizes = [size for size, _ in sweep]
    fig, ax = plt.subplots(figsize=(7, 3.6), facecolor="white")
    ax.plot(sizes, [r.downtime * 1e3 for _, r in sweep], "o-", color=PAUSED, label="downtime (measured)")
    if mbit:
        ax.plot(sizes, [size * PAGE * 8 / (mbit * 1e6) * 1e3 for size in sizes], ":", color=LINK,
                label=f"time to send the working set at {mbit:,.0f} Mbit/s")
    for size, r in sweep:
        ax.annotate(_n(len(r.rounds), "round"), (size, r.downtime * 1e3), textcoords="offset points", xytext=(4, -12),
                    fontsize=8, color="#555555")
    ax.set_xlabel("writable working set (pages the guest keeps rewriting)")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.set_title("downtime grows with the writable working set", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return Plot(fig, "\n".join(f"working set {size} pages: downtime {_ms(r.downtime)}, {_n(len(r.rounds), 'round')}, "
                               f"stopped by '{r.stop_reason}', total {_ms(r.total_time)}" for size, r in sweep))


# --- what the peer saw, and what the destination holds ----------------------------------------------------
class Transcript:
    """The sequence numbers the remote peer received, the source's and the destination's apart.
    `gaps` lists numbers that never arrived, `repeats` numbers that arrived twice."""

    def __init__(self, numbers, switch_seq, show=6):
        self.numbers, self.switch_seq, self.show = list(numbers), switch_seq, show
        self.source = [n for n in self.numbers[:self._boundary()]]
        self.destination = self.numbers[self._boundary():]
        seen, self.repeats = set(), []
        for n in self.numbers:
            if n in seen:
                self.repeats.append(n)
            seen.add(n)
        top = max(self.numbers, default=0)
        self.gaps = [n for n in range(1, top + 1) if n not in seen]
        self.continuous = not self.gaps and not self.repeats and self.numbers == sorted(self.numbers)

    def _boundary(self):
        # the first number after the source's last one: where the destination took over
        for k, n in enumerate(self.numbers):
            if n == self.switch_seq:
                return k + 1
        return len(self.numbers)

    def verdict(self):
        if self.continuous:
            return (f"continuous: {len(self.source)} lines from the source, then {len(self.destination)} from the "
                    f"destination, no gap and no repeat across the switch-over")
        parts = ([f"missing {self.gaps[:10]}"] if self.gaps else []) + \
                ([f"repeated {self.repeats[:10]}"] if self.repeats else [])
        return "not continuous: " + "; ".join(parts or ["out of order"])

    @property
    def text(self):
        def tail(xs):
            return " ".join(map(str, xs if len(xs) <= self.show else ["..."] + xs[-self.show:]))

        def head(xs):
            return " ".join(map(str, xs if len(xs) <= self.show else xs[:self.show] + ["..."]))
        return (f"source: {tail(self.source)} | switch-over after seq {self.switch_seq} | destination: "
                f"{head(self.destination)}\n{self.verdict()}")

    def _repr_html_(self):
        def chips(xs, colour, tail):
            shown = (xs if len(xs) <= self.show else (xs[-self.show:] if tail else xs[:self.show]))
            cut = "<span style='color:#777'>…</span>" if len(shown) < len(xs) else ""
            body = "".join(f"<span style='display:inline-block;min-width:2.4em;margin:1px;padding:1px 4px;"
                           f"background:{colour};color:white;border-radius:3px;text-align:center;"
                           f"font-family:monospace'>{n}</span>" for n in shown)
            return cut + body if tail else body + cut
        ok = "#1b5e20" if self.continuous else PAUSED
        return (f"<div class='vmkit-transcript' style='background:#fcfcfc;color:#24292e;padding:6px;"
                f"display:inline-block'><div style='font-size:12px;color:#555'>seq numbers the peer received</div>"
                f"<span style='color:#555'>source</span> {chips(self.source, '#546e7a', True)}"
                f"<span style='display:inline-block;border-left:3px dashed {PAUSED};margin:0 6px;padding-left:4px;"
                f"color:{PAUSED};font-size:11px;vertical-align:middle' title='switch-over'>switch-over</span>"
                f"{chips(self.destination, DEST, False)} <span style='color:#555'>destination</span>"
                f"<div style='color:{ok};margin-top:4px'><b>{html.escape(self.verdict())}</b></div></div>")

    def __repr__(self):
        return self.text


def transcript(result, show=6):
    """The "seq n" numbers the peer received across the switch-over (result.transcript), the source's
    before the boundary and the destination's after it, checked for gaps and repeats."""
    return Transcript(result.transcript, result.switch_seq, show)


def digests(result):
    """The source's and the destination's memory digests at switch-over, side by side."""
    same = result.source_digest == result.destination_digest
    return Table(["memory", "sha256 of the 4 MiB at switch-over"],
                 [["source (paused)", result.source_digest], ["destination", result.destination_digest]],
                 "equal: every page arrived, the last version of each" if same else
                 "DIFFERENT: a page is missing or stale on the destination")


# --- while it runs ------------------------------------------------------------------------------------------
class Progress(w.VBox):
    """One bar per counting rule of Xen's stop conditions, moved as each round ends: rounds against
    the maximum, pages sent in all against the factor of memory, and the pages the last round sent
    or skipped against the threshold (the migration stops when that bar turns green)."""

    def __init__(self, stop, memory_pages=1024):
        self.stop, self.memory_pages = stop, memory_pages
        layout = w.Layout(width="340px")
        style = {"description_width": "170px"}
        most = stop.max_rounds or 100
        factor = stop.max_factor or 3.0
        self.threshold = stop.min_pages or 0
        self.rounds = w.IntProgress(0, 0, most, description=f"rounds (max {most})", style=style, layout=layout)
        self.sent = w.IntProgress(0, 0, int(factor * memory_pages),
                                  description=f"sent (max {factor:g}x memory)", style=style, layout=layout)
        self.dirty = w.IntProgress(0, 0, memory_pages, description=f"last round (stop < {self.threshold})",
                                   style=style, layout=layout, bar_style="warning")
        self.numbers = [w.HTML() for _ in range(3)]
        self.status = w.HTML("<i>waiting for the first round</i>")
        self.sent_so_far = 0
        super().__init__([w.HBox([bar, number]) for bar, number in
                          zip((self.rounds, self.sent, self.dirty), self.numbers)] + [self.status],
                         layout=w.Layout(border="1px solid #ccc", padding="4px", width="fit-content"))
        self.add_class("vmkit-migration-progress")

    def update(self, record, sent_total=None):
        """One round has ended (`record`, a Round); `sent_total` pages have gone over the link (counted
        here from the rounds when not given). Pass it as migrate(..., on_round=progress.update)."""
        self.sent_so_far = self.sent_so_far + record.pages_sent if sent_total is None else sent_total
        self.rounds.value = min(record.number, self.rounds.max)
        self.sent.value = min(self.sent_so_far, self.sent.max)
        handled = record.pages_sent + record.pages_skipped
        self.dirty.value = min(handled, self.dirty.max)
        self.dirty.bar_style = "success" if handled < self.threshold else "warning"
        self.numbers[0].value = f"{record.number}"
        self.numbers[1].value = f"{self.sent_so_far:,} pages"
        self.numbers[2].value = f"{record.pages_sent:,} sent + {record.pages_skipped:,} skipped"
        self.status.value = (f"round {record.number}: {record.pages_sent:,} pages in {record.seconds * 1e3:.1f} ms "
                             f"at {record.mbit:,.0f} Mbit/s, {record.pages_skipped:,} skipped; "
                             f"{record.pages_dirtied:,} dirty at its end")

    def finish(self, result):
        """Stop-and-copy is done: say which condition stopped the rounds, and the downtime."""
        self.status.value = (f"<b>stopped by '{html.escape(result.stop_reason)}'</b>; stop-and-copy: downtime "
                             f"{_ms(result.downtime)}, switch-over at {_ms(result.total_time)}; "
                             f"{'verified' if result.verified else 'NOT verified'}")

    @classmethod
    def replay(cls, result, stop, memory_pages=1024):
        """The bars as they stood at the end of a finished migration, filled from its records."""
        bar = cls(stop, memory_pages)
        for record in result.rounds:
            bar.update(record)
        bar.finish(result)
        return bar

    @property
    def text(self):
        return self.status.value


# --- the paper's figures, and ours -----------------------------------------------------------------------
# Clark, Fraser, Hand, Hansen, Jul, Limpach, Pratt, Warfield, "Live Migration of Virtual Machines",
# NSDI 2005, section 1: downtimes of two services migrated between two hosts on gigabit Ethernet.
CLARK = [("SPECweb99 web server", "210 ms"), ("Quake 3 game server", "60 ms")]


def clark_table(ours=None):
    """Clark et al.'s downtimes (not measured here); `ours` maps a name to a MigrationResult of
    this course, shown beneath them with the link it used."""
    rows = [[name, downtime, "Clark et al., NSDI 2005 (Xen, real hosts)"] for name, downtime in CLARK]
    for name, r in (ours or {}).items():
        link = f"{r.rounds[0].mbit:,.0f} Mbit/s" if r.rounds else ""
        rows.append([name, _ms(r.downtime), f"here: 4 MiB guest, simulated {link} link, "
                                            f"{_n(len(r.rounds), 'round')}, '{r.stop_reason}'"])
    return Table(["workload", "downtime", "where"], rows,
                 "Clark et al.'s figures are from the paper's introduction; ours are this machine's runs")


# --- which engine, and a widget to explore -------------------------------------------------------------
def engine_banner(report, where):
    """Which VM the lesson migrates on: `report` is vmkit.kvm.probe(), `where` "kvm" or "model"."""
    if where == "kvm":
        return Banner(f"Real KVM: the cells marked 'ENGINE' migrate guests between two VMs on {report.path} "
                      f"({report.module or 'module unknown'}), tracking writes with KVM_MEM_LOG_DIRTY_PAGES and "
                      f"KVM_GET_DIRTY_LOG.\nThe guest runs in real time there, so its rounds differ a little "
                      f"from run to run; the predict-then-run questions use the emulated machine, which is "
                      f"reproducible.", True)
    return Banner(f"No usable KVM here: every migration below runs on vmkit's emulated machine, which tracks "
                  f"writes by write-protecting the pages it has sent, as KVM does without PML.\n"
                  f"Why: {report.why_not('protected-mode') or 'the lesson chose the model'}", False)


class Explorer(w.VBox):
    """Sliders for the writable working set and the link; every change calls `run(wws_pages, mbit,
    adaptive)` (the notebook's migration, so this widget only draws) and redraws the timeline and
    the rounds. `result`: the migration for the starting values, if one has run already."""

    def __init__(self, run, wws_pages=32, mbit=1000, result=None):
        self.run = run
        style = {"description_width": "150px"}
        self.wws = w.SelectionSlider(options=[8, 16, 32, 64, 128, 256, 512], value=wws_pages,
                                     description="working set (pages)", style=style)
        self.mbit = w.SelectionSlider(options=[100, 300, 1000, 3000, 10000], value=mbit,
                                      description="link (Mbit/s)", style=style)
        self.adaptive = w.Checkbox(False, description="Clark's adaptive rate (from 100 Mbit/s)",
                                   layout=w.Layout(width="auto"), indent=False)
        self.plot, self.table = w.Output(), w.Output()
        for control in (self.wws, self.mbit, self.adaptive):
            control.observe(lambda _: self.redraw(), names="value")
        super().__init__([w.HBox([w.VBox([self.wws, self.mbit]), self.adaptive]), self.plot, self.table])
        self.add_class("vmkit-migration-explorer")
        self.redraw(result)         # a result of the starting values, when the notebook has one already

    def redraw(self, result=None):
        self.result = result or self.run(self.wws.value, self.mbit.value, self.adaptive.value)
        with self.plot:
            self.plot.clear_output(wait=True)
            display(timeline(self.result))
        with self.table:
            self.table.clear_output(wait=True)
            display(rounds_table(self.result))


# --- round by round ---------------------------------------------------------------------------------------
PAGE_COLOURS = {"unsent": "#e0e0e0", "clean": SEND, "dirty": DIRTY, "moved": DEST}
PAGE_WORDS = {"unsent": "not sent yet", "clean": "sent, unchanged since", "dirty": "dirtied since it was sent",
              "moved": "on the destination"}


def memory_html(states, columns=32):
    """The guest's pages as a grid of small squares, one colour per state (PAGE_COLOURS)."""
    cells = "".join(f"<i style='background:{PAGE_COLOURS[s]}' title='page {n}: {PAGE_WORDS[s]}'></i>"
                    for n, s in enumerate(states))
    legend = " ".join(f"<span style='white-space:nowrap'><i style='background:{PAGE_COLOURS[s]}'></i> "
                      f"{PAGE_WORDS[s]} ({states.count(s):,})</span>" for s in PAGE_COLOURS if s in states)
    style = ("<style>.vmkit-pages i{display:inline-block;width:9px;height:9px;margin:1px;border-radius:1px}"
             f".vmkit-pages .grid{{display:grid;grid-template-columns:repeat({columns},11px);line-height:0}}</style>")
    return (f"{style}<div class='vmkit-pages' style='background:#fcfcfc;color:#24292e;padding:4px;display:inline-block'>"
            f"<div class='grid'>{cells}</div><div style='font-size:12px;margin-top:4px'>{legend}</div></div>")


class RoundStepper(w.VBox):
    """Pre-copy one round at a time, the guest's memory drawn page by page. `start()` returns a
    fresh vmkit.migration.Migration (the notebook makes it; this widget only calls its building
    blocks: send, dirty_pages, stop_and_copy); `stop` is the StopConditions asked after each round,
    and says whether a round skips pages dirtied again (stop.skip)."""

    def __init__(self, start, stop):
        self.start, self.stop = start, stop
        self.next_button = w.Button(description="next round", button_style="primary")
        self.copy_button = w.Button(description="stop-and-copy", button_style="danger")
        self.reset_button = w.Button(description="reset")
        self.next_button.on_click(lambda _: self.next_round())
        self.copy_button.on_click(lambda _: self.stop_and_copy())
        self.reset_button.on_click(lambda _: self.reset())
        self.memory, self.status = w.HTML(), w.HTML()
        super().__init__([w.HBox([self.next_button, self.copy_button, self.reset_button]), self.status, self.memory])
        self.add_class("vmkit-round-stepper")
        self.reset()

    def reset(self):
        self.m = self.start()
        self.pending = list(self.m.all_pages())          # round 1 sends everything
        self.states = ["unsent"] * self.m.memory_pages
        self.result = None
        self._draw("Dirty logging is on; nothing sent yet. <b>next round</b> sends all "
                   f"{self.m.memory_pages:,} pages while the guest runs on.")

    def next_round(self):
        if self.result is not None:
            return
        record = self.m.send(self.pending, skip=self.stop.skip)
        for page in self.pending:                         # skipped pages are dirty: redrawn just below
            self.states[page] = "clean"
        self.pending = self.m.dirty_pages()               # get-and-clear, as KVM_GET_DIRTY_LOG
        for page in self.pending:
            self.states[page] = "dirty"
        reason = self.stop.reason(self.m.rounds, self.m.sent_total, self.m.memory_pages, self.m.link)
        who = html.escape(self.stop.name)
        verdict = (f"{who} would stop now: <b>{html.escape(reason)}</b>. Press <b>stop-and-copy</b>." if reason else
                   f"No stop condition holds: {who} would send another round.")
        self._draw(f"Round {record.number}: sent {record.pages_sent:,} pages in {record.seconds * 1e3:.2f} ms and "
                   f"skipped {record.pages_skipped:,} (dirtied again before their batch went); "
                   f"{record.pages_dirtied:,} are dirty at its end. {verdict}")

    def stop_and_copy(self):
        if self.result is not None:
            return
        reason = self.stop.reason(self.m.rounds, self.m.sent_total, self.m.memory_pages, self.m.link) \
            if self.m.rounds else None
        self.result = self.m.stop_and_copy(self.pending, stop_reason=reason or "chosen")
        self.states = ["moved"] * self.m.memory_pages
        self._draw(f"Paused, sent the last {self.result.final_pages:,} pages and the vCPU and device state: downtime "
                   f"<b>{_ms(self.result.downtime)}</b> after {_n(len(self.result.rounds), 'round')} "
                   f"({self.result.pages_sent:,} pages in all); "
                   f"{'verified: the digests match and the output goes on' if self.result.verified else 'NOT verified'}.")

    def _draw(self, message):
        self.status.value = f"<div style='margin:4px 0'>{message}</div>"
        self.memory.value = memory_html(self.states)
        self.next_button.disabled = self.result is not None
        self.copy_button.disabled = self.result is not None

    @property
    def text(self):
        counts = ", ".join(f"{self.states.count(s):,} {PAGE_WORDS[s]}" for s in PAGE_COLOURS if s in self.states)
        return f"after {_n(len(self.m.rounds), 'round')}: {counts}"
