"""The live-migration pictures render a migration's records: what each shows must be what the
migration recorded (rounds, downtime, the stop condition, the peer's transcript, the digests)."""
import base64
import html
from types import SimpleNamespace

import pytest

from vmkit.viz.migration import (
    CLARK,
    RoundStepper,
    Progress,
    clark_table,
    conditions,
    digests,
    dirty_mbit,
    downtime_plot,
    memory_html,
    phases,
    precopy_diagram,
    rate_plot,
    rounds_plot,
    rounds_table,
    timeline,
    transcript,
)

from vmkit.migration import CLARK as CLARKS_RULE, QEMU, XEN, StopConditions


def record(number, sent, dirtied, seconds, mbit=1000.0, skipped=0):
    return SimpleNamespace(number=number, pages_sent=sent, pages_dirtied=dirtied, seconds=seconds, mbit=mbit,
                           pages_skipped=skipped)


def result(rounds, reason="few pages sent", downtime=0.0012, numbers=tuple(range(1, 11)), switch=7,
           source="ab" * 32, destination="ab" * 32):
    total = sum(r.seconds for r in rounds) + downtime
    return SimpleNamespace(rounds=rounds, stop_reason=reason, downtime=downtime, total_time=total,
                           pages_sent=sum(r.pages_sent for r in rounds) + rounds[-1].pages_dirtied,
                           final_pages=rounds[-1].pages_dirtied, verified=source == destination,
                           source_digest=source, destination_digest=destination, transcript=list(numbers),
                           switch_seq=switch)


CONVERGING = result([record(1, 1024, 200, 0.0336), record(2, 200, 60, 0.0066), record(3, 40, 20, 0.002, skipped=20)])
DIABOLICAL = result([record(1, 1024, 738, 0.0336)] + [record(k, 738, 738, 0.0243) for k in (2, 3, 4)],
                    reason="sent 3x memory", downtime=0.0243)


def test_phases_put_rounds_end_to_end_and_the_stop_and_copy_last_for_the_downtime():
    spans = phases(CONVERGING)
    assert [what for _, _, what in spans] == ["round 1", "round 2", "round 3", "stop-and-copy"]
    assert spans[1][0] == pytest.approx(0.0336) and spans[3][0] == pytest.approx(0.0336 + 0.0066 + 0.002)
    assert spans[3][1] == CONVERGING.downtime


def test_the_timeline_says_when_each_round_ran_and_when_the_guest_switched_over():
    plot = timeline(CONVERGING)
    lines = plot.text.splitlines()
    assert lines[0].split() [:4] == ["0.00", "ms", "round", "1:"] and "1,024 pages" in lines[0]
    assert "33.60 ms  round 2: 200 pages" in lines[1]
    assert "paused for 1.20 ms" in lines[3]
    assert lines[-1].strip().startswith("43.40 ms  switch-over")


def test_a_plot_is_a_png_whose_alt_text_is_its_text_form():
    plot = timeline(CONVERGING)
    bundle = plot._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert f'alt="{html.escape(plot.text)}"' in bundle["text/html"]
    assert "vmkit-diagram" not in bundle["text/html"]       # only graphviz pictures carry that class
    assert bundle["text/plain"] == plot.text


def test_the_rounds_table_has_a_row_per_round_then_the_stop_and_copy_with_the_pages_still_dirty():
    table = rounds_table(CONVERGING)
    assert [row[0] for row in table.rows] == [1, 2, 3, "stop-and-copy"]
    assert table.rows[1][1:4] == ["200", "0", "60"] and table.rows[2][1:4] == ["40", "20", "20"]
    assert table.rows[-1][1] == "20" and table.rows[-1][5] == "1.20"
    assert "stopped by 'few pages sent'" in table.caption


def test_the_rounds_table_gives_the_factor_by_which_each_round_shrinks_the_dirty_set():
    assert [row[4] for row in rounds_table(CONVERGING).rows] == ["0.20", "0.30", "0.33", ""]   # skipped count too
    assert [row[4] for row in rounds_table(DIABOLICAL).rows[1:-1]] == ["1.00"] * 3       # never smaller
    assert rounds_table(result([record(1, 0, 0, 0.0)])).rows[0][4] == ""


def test_dirty_rate_is_the_pages_dirtied_in_a_round_over_its_time():
    assert dirty_mbit(record(2, 738, 738, 0.0243)) == pytest.approx(738 * 4096 * 8 / 0.0243 / 1e6)
    assert dirty_mbit(record(1, 0, 0, 0.0)) == 0.0
    text = rate_plot({"diabolical": DIABOLICAL}).text
    assert "995 vs 1,000" in text and "stopped by 'sent 3x memory'" in text


def test_the_rounds_plot_names_each_workload_its_rounds_and_its_stop_condition():
    text = rounds_plot({"steady": CONVERGING, "diabolical": DIABOLICAL}).text
    assert ("steady: 3 rounds (pages sent/skipped/dirty: 1024/0/200, 200/0/60, 40/20/20); stopped by "
            "'few pages sent'") in text
    assert "diabolical: 4 rounds" in text and "'sent 3x memory'" in text


def test_the_downtime_sweep_lists_each_working_set_with_its_downtime():
    text = downtime_plot([(16, CONVERGING), (512, DIABOLICAL)], mbit=1000).text.splitlines()
    assert text[0].startswith("working set 16 pages: downtime 1.2 ms, 3 rounds")
    assert text[1].startswith("working set 512 pages: downtime 24.3 ms, 4 rounds")


def test_the_diagram_marks_the_condition_that_stopped_this_run_and_counts_its_rounds():
    g = precopy_diagram(DIABOLICAL, XEN)
    assert "4 rounds, stopped by 'sent 3x memory'" in g.text
    assert '<B>more than 3x memory sent</B>' in g.source
    assert "fewer than 50 pages sent or skipped" in g.source and "<B>fewer than 50" not in g.source
    assert "no ×3" in g.source                     # rounds 2-4: three times back into the loop
    assert "yes: sent 3x memory" in g.source
    plain = precopy_diagram()
    assert "This run" not in plain.text and "29 rounds done" in plain.source and "skip" in plain.source


def test_each_presets_rules_are_drawn_in_its_own_words():
    assert [key for key, _ in conditions(XEN)] == ["rate limit", "max rounds", "few pages sent", "sent 3x memory"]
    assert [key for key, _ in conditions(CLARKS_RULE)] == ["rate above maximum", "little left"]
    assert conditions(QEMU) == [("fits the downtime limit", "the dirty pages would cross within 300 ms")]
    qemu = precopy_diagram(stop=QEMU)
    assert "QEMU" in qemu.source and "skip" not in qemu.source


def test_the_transcript_marks_the_switch_over_and_finds_nothing_wrong_in_a_continuous_one():
    t = transcript(CONVERGING)
    assert t.source == [1, 2, 3, 4, 5, 6, 7] and t.destination == [8, 9, 10]
    assert t.continuous and not t.gaps and not t.repeats
    assert "switch-over after seq 7" in t.text and "no gap and no repeat" in t.text


@pytest.mark.parametrize("numbers, gaps, repeats", [
    ([1, 2, 3, 4, 5, 6, 7, 9, 10], [8], []),          # a line lost at the switch-over
    ([1, 2, 3, 4, 5, 6, 7, 7, 8, 9], [], [7]),        # the destination said the last line again
    ([1, 2, 3, 3, 4, 5, 6, 7, 8], [], [3]),           # a repeat long before the switch-over
])
def test_the_transcript_catches_a_gap_or_a_repeat(numbers, gaps, repeats):
    t = transcript(result(CONVERGING.rounds, numbers=numbers))
    assert not t.continuous and t.gaps == gaps and t.repeats == repeats
    assert "not continuous" in t.text and "not continuous" in t._repr_html_()


def test_digests_side_by_side_say_whether_the_destination_holds_the_same_memory():
    assert "equal" in digests(CONVERGING).caption
    stale = digests(result(CONVERGING.rounds, destination="cd" * 32))
    assert "DIFFERENT" in stale.caption and stale.rows[1][1] == "cd" * 32


def test_progress_bars_follow_the_rounds_toward_each_stop_condition():
    bar = Progress(XEN, 1024)
    assert (bar.rounds.max, bar.sent.max) == (29, 3072)
    for r in DIABOLICAL.rounds:
        bar.update(r)                                   # as migrate(on_round=bar.update) calls it
    assert bar.rounds.value == 4 and bar.dirty.value == 738 and "738 sent + 0 skipped" in bar.numbers[2].value
    assert bar.sent.value == bar.sent.max and bar.numbers[1].value == "3,238 pages"   # full: past 3x memory
    assert bar.dirty.bar_style == "warning"
    bar.finish(DIABOLICAL)
    assert "stopped by 'sent 3x memory'" in bar.text and "24.3 ms" in bar.text
    calm = Progress.replay(CONVERGING, XEN)
    assert calm.dirty.value == 60 and calm.dirty.bar_style == "warning" and calm.sent.value == 1264   # 40 + 20
    calm.update(record(4, 20, 18, 0.001, skipped=29))
    assert calm.dirty.value == 49 and calm.dirty.bar_style == "success"


def test_clark_figures_stand_beside_ours_labelled_by_where_they_come_from():
    table = clark_table({"steady here": CONVERGING})
    assert [row[1] for row in table.rows[:2]] == [d for _, d in CLARK] == ["210 ms", "60 ms"]
    assert table.rows[2][1] == "1.2 ms" and "simulated 1,000 Mbit/s" in table.rows[2][2]
    assert all("NSDI 2005" in row[2] for row in table.rows[:2])


def test_a_real_migration_renders_end_to_end():
    migration = pytest.importorskip("vmkit.migration")
    r = migration.migrate(migration.workload("steady", wws_pages=64), where="model",
                          link=migration.Link(mbit=1000), warmup=0.005, after=0.005)
    assert timeline(r).text.count("round ") == len(r.rounds)
    table = rounds_table(r)
    assert sum(int(row[1].replace(",", "")) for row in table.rows) == r.pages_sent
    assert sum(int(row[2].replace(",", "")) for row in table.rows[:-1]) == sum(x.pages_skipped for x in r.rounds)
    assert precopy_diagram(r, migration.XEN).text.count(r.stop_reason) == 1
    t = transcript(r)
    assert t.source[-1] == r.switch_seq and t.source + t.destination == r.transcript


def test_a_slow_writers_rounds_shrink_by_about_half_and_a_steady_writers_not_at_all():
    migration = pytest.importorskip("vmkit.migration")
    slow = rounds_table(migration.migrate(migration.workload("random", pages=700, pace=3000, seed=2),
                                          link=migration.Link(mbit=1000), warmup=0.002))
    ratios = [float(row[4]) for row in slow.rows[:-1]]
    assert len(ratios) >= 3 and all(0.3 < r < 0.6 for r in ratios)
    assert "stopped by 'few pages sent'" in slow.caption
    steady = rounds_table(migration.migrate(migration.workload("steady", wws_pages=64),
                                            link=migration.Link(mbit=1000), stop=StopConditions(max_rounds=4),
                                            warmup=0.002))
    assert {row[4] for row in steady.rows[1:-1]} == {"1.00"}


def test_the_memory_grid_draws_one_square_per_page_and_counts_each_state():
    page = memory_html(["unsent"] * 3 + ["clean"] * 5 + ["dirty"] * 2)
    assert page.count("<i style='background:") == 10 + 3           # the pages, then a square per legend entry
    assert "page 9: dirtied since it was sent" in page
    assert "not sent yet (3)" in page and "sent, unchanged since (5)" in page and "on the destination" not in page


class FakeMigration:
    """Migration's building blocks on a script: each round the guest dirties `dirty` pages."""

    def __init__(self, dirty):
        self.memory_pages, self.dirty, self.rounds, self.sent_total, self.link = 16, list(dirty), [], 0, None
        self.calls = []

    def all_pages(self):
        return range(self.memory_pages)

    def send(self, pages, skip=True):
        self.calls.append(("send", list(pages)))
        self.sent_total += len(pages)
        self.rounds.append(record(len(self.rounds) + 1, len(pages), len(self.dirty[len(self.rounds)]), 0.001))
        return self.rounds[-1]

    def dirty_pages(self):
        return self.dirty[len(self.rounds) - 1]

    def stop_and_copy(self, pages, stop_reason="chosen"):
        self.calls.append(("stop_and_copy", list(pages), stop_reason))
        return result(self.rounds or [record(1, 0, 0, 0.0)], reason=stop_reason)


class FewerThan:
    name, skip = "Fewer-than", True

    def __init__(self, n):
        self.n = n

    def reason(self, rounds, sent_total, memory_pages, link):
        return "few pages sent" if rounds[-1].pages_dirtied < self.n else None


def test_the_round_stepper_sends_everything_first_then_only_what_the_dirty_log_names():
    fake = FakeMigration([[1, 2, 3], [2]])
    stepper = RoundStepper(lambda: fake, FewerThan(2))
    stepper.next_round()
    assert fake.calls[0] == ("send", list(range(16)))
    assert stepper.states[1:4] == ["dirty"] * 3 and stepper.states.count("clean") == 13
    assert "another round" in stepper.status.value
    stepper.next_round()
    assert fake.calls[1] == ("send", [1, 2, 3]) and stepper.states.count("dirty") == 1
    assert "Fewer-than would stop now: <b>few pages sent</b>" in stepper.status.value
    stepper.stop_and_copy()
    assert fake.calls[2] == ("stop_and_copy", [2], "few pages sent")
    assert set(stepper.states) == {"moved"} and stepper.next_button.disabled
    stepper.next_round()                                   # after the switch-over nothing more is sent
    assert len(fake.calls) == 3


def test_the_banner_says_which_vm_migrates_and_why_not_kvm_with_the_fix():
    import vmkit
    from vmkit.viz.migration import engine_banner
    missing = vmkit.kvm.probe("/dev/no-such-kvm")
    banner = engine_banner(missing, "model")
    assert not banner.ok and "emulated machine" in banner.text and "/dev/no-such-kvm does not exist" in banner.text
    assert "modprobe" in banner.text
    here = SimpleNamespace(path="/dev/kvm", module="kvm_intel")
    assert "KVM_GET_DIRTY_LOG" in engine_banner(here, "kvm").text
