"""vmkit.viz.compare renders what vmkit.compare measured: the tables say what the measurements
say, the paper's numbers are the paper's, the cost model's pictures use the model, and the
designer predicts from the suite's counts. The suite here is built by hand, so every number a
rendering shows can be checked against the one that went in."""
from dataclasses import dataclass

import pytest

from vmkit import compare
from vmkit.compare import Suite
from vmkit.viz import compare as vc
from vmkit.viz.translation import ADAMS_AGESEN


def M(workload, technique, ran=True, rounds=100, instructions=1000, seconds=0.001, **rest):
    """A Measurement as vmkit.compare makes them, with made-up numbers."""
    return compare.Measurement(workload, technique, ran, rounds=rounds, instructions=instructions, seconds=seconds,
                               **rest)


@dataclass
class W:
    adams_agesen: object = None


WORKLOADS = {"syscall": W("syscall"), "in": W("in"), "call-ret": W("call/ret"), "compute": W(None),
             "pgfault": W("pgfault"), "ptemod": W("ptemod")}

# per technique: seconds = 1 ns per instruction + 20 µs per trap + 10 µs per exit
COST = {"instruction": 1e-9, "trap": 20e-6, "exit": 10e-6, "hypercall": 5e-6, "block": 50e-6}


def cell(workload, technique, **counts):
    m = M(workload, technique, **counts)
    m.seconds = (m.instructions * COST["instruction"] + m.traps * COST["trap"] + m.exits * COST["exit"]
                 + m.hypercalls * COST["hypercall"] + m.blocks * COST["block"])
    return m


def syscall_cells(instructions, rounds=100, techniques=("native", "trap-and-emulate", "binary-translation",
                                                         "hardware-assist")):
    """The syscall loop as the techniques count it: two traps a round under trap-and-emulate, one (and
    three translated blocks) under binary translation, none natively or under hardware assist."""
    extra = {"trap-and-emulate": dict(traps=2 * rounds), "binary-translation": dict(traps=rounds, blocks=3)}
    return [cell("syscall", t, rounds=rounds, instructions=instructions, **extra.get(t, {})) for t in techniques]


@pytest.fixture
def suite():
    return Suite([
        *syscall_cells(2000),
        M("syscall", "kvm", ran=False, reason="this machine's KVM cannot deliver int n"),
        cell("in", "native", instructions=3000),
        cell("in", "trap-and-emulate", instructions=3000, traps=100),
        cell("in", "binary-translation", instructions=3000, traps=100, blocks=2),
        cell("in", "hardware-assist", instructions=3000, exits=100),
        cell("in", "kvm", instructions=3000, exits=100),
        cell("call-ret", "native", instructions=400_000),
        cell("call-ret", "hardware-assist", instructions=400_000),
        cell("compute", "native", instructions=900_000),
        M("ptemod", "kvm", ran=False, reason="this machine's KVM cannot page"),
        cell("ptemod", "native", instructions=5000),
        cell("ptemod", "trap-and-emulate", instructions=5000, traps=130, hidden_faults=8, trace_faults=100),
        cell("ptemod", "binary-translation", instructions=5000, traps=131, blocks=38, hidden_faults=8,
             trace_faults=2, trace_callouts=99),
    ])


class Model:
    costs = {t: dict(COST) for t in ("native", "trap-and-emulate", "binary-translation", "hardware-assist", "kvm")}

    def predict(self, technique, instructions=0, traps=0, exits=0, hypercalls=0, blocks=0):
        c = self.costs[technique]
        return (instructions * c["instruction"] + traps * c["trap"] + exits * c["exit"]
                + hypercalls * c["hypercall"] + blocks * c["block"])


def test_the_paper_table_keeps_the_cells_already_in_the_course_and_adds_figure_4s_others():
    names = [row[0] for row in vc.PAPER]
    assert names == list(vc.FIGURE_4)
    for row in ADAMS_AGESEN:                      # reused, not retyped
        assert row in vc.PAPER
    assert vc.paper_cycles("pgfault") == (1093, 3927, 11242)
    assert vc.paper_cycles("divzero") == (889, 3223, 1014)
    assert vc.paper_cycles("in") == (3209, 214, 15826)
    assert vc.paper_cycles("syscall") == (None, None, None)     # the paper says "≈2,000 more", no totals
    assert "ASPLOS 2006" in vc.paper_table().caption and "Figure 4" in vc.paper_table().caption
    # the paper's ratios between its two VMMs (Figure 4's text: ptemod "approximately thirty times worse")
    assert 11242 / 3927 == pytest.approx(2.9, abs=0.05) and 12733 / 391 == pytest.approx(33, abs=0.5)


def test_the_time_table_shows_each_cell_its_slowdown_and_a_dash_where_it_could_not_run(suite):
    table = vc.time_table(suite)
    assert table.header[:3] == ["workload", "native", "trap & emulate"]
    syscall = next(r for r in table.rows if r[0] == "syscall")
    # trap-and-emulate: (2000 ns + 200 * 20 µs) / 2000 ns over 100 rounds
    assert syscall[2] == "40.0 (2,001×)"
    assert syscall[-1] == "—"
    assert vc.slowdown(suite, "syscall", "kvm") is None
    assert vc.slowdown(suite, "in", "hardware-assist") == pytest.approx((3e-6 + 1e-3) / 3e-6)


def test_the_counts_table_shows_the_exact_counts_and_cannot_run_gives_the_reasons(suite):
    counts = vc.counts_table(suite)
    row = next(r for r in counts.rows if r[0] == "syscall")
    assert row[1:3] == ["100", "2,000"]
    assert "100 traps · 3 blocks" in row
    assert "none" in row                          # hardware assist: the syscall never left the guest
    reasons = vc.cannot_run(suite)
    assert ("ptemod", "real KVM", "this machine's KVM cannot page") in [tuple(r) for r in reasons.rows]
    assert len(reasons.rows) == 2
    # the shadow MMU's events, in brackets after the traps they are among
    ptemod = dict(zip(counts.header, next(r for r in counts.rows if r[0] == "ptemod")))
    assert ptemod["trap & emulate"] == "130 traps (8 hidden faults, 100 trace faults)"
    assert ptemod["binary transl."] == "131 traps (8 hidden faults, 2 trace faults, 99 trace call-outs) · 38 blocks"
    assert ptemod["native"] == "none"


def test_ordering_is_by_measured_time_and_leaves_out_what_did_not_run(suite):
    # the translator paid for two blocks on top of the same traps
    assert vc.ordering(suite, "in") == ["native", "hardware-assist", "kvm", "trap-and-emulate",
                                        "binary-translation"]
    assert "kvm" not in vc.ordering(suite, "syscall")


def test_each_claimed_ordering_is_checked_against_the_times(suite):
    table = vc.check_orderings(suite, [("syscall", "native", "trap-and-emulate", "a trap a call"),
                                       ("syscall", "trap-and-emulate", "native", "wrong on purpose"),
                                       ("syscall", "native", "kvm", "cannot run here")])
    assert [r[2] for r in table.rows] == ["✔ 2,001×", "✘ 0.0005×", "— (could not run)"]


def test_a_per_round_claim_is_checked_on_what_one_round_costs(suite):
    shorter = Suite(syscall_cells(200, rounds=10, techniques=("native", "trap-and-emulate", "binary-translation")))
    claim = compare.Claim("syscall", "binary-translation", "trap-and-emulate", "one trap a round against two",
                          per_round=True, factor=1.5)
    table = vc.check_orderings(suite, [claim], shorter=shorter)
    # per round: 20 instructions and 1 trap (20.02 µs) against 20 instructions and 2 traps (40.02 µs)
    assert table.rows[0][1] == "binary transl. < trap & emulate ÷ 1.5, per round"
    assert table.rows[0][2] == "✔ 20.0 against 40.0 µs a round"
    assert vc.check_orderings(suite, [claim]).rows[0][2] == "— (needs a shorter run to subtract)"


def test_a_runs_time_splits_into_what_each_round_costs_and_what_the_run_pays_once(suite):
    # 90 more rounds: 18 more µs of instructions and 180 more traps for trap-and-emulate, nothing more for the blocks
    shorter = Suite(syscall_cells(200, rounds=10))
    times = vc.round_time_table(shorter, suite)
    assert times.header[:3] == ["workload", "rounds", "native"]
    assert times.rows[0][:5] == ["syscall", "10 → 100", "0.020", "40.0", "20.0"]
    assert times.rows[1][2:] == ["—"] * 5                      # not in the shorter suite
    fixed = vc.fixed_cost_table(shorter, suite)
    assert fixed.rows[0][1:4] == ["0.000", "0.000", "0.150"]    # the translator's 3 blocks, 50 µs each, once
    noisy = Suite([M("syscall", "native", rounds=10, seconds=0.0002, spread=0.001)])
    assert vc.round_time_table(noisy, suite).rows[0][2].startswith("< ")   # lost in the repeats' disagreement


def test_the_paper_beside_ours_can_compare_one_round_without_the_fixed_part(suite):
    shorter = Suite([cell("in", "native", rounds=10, instructions=300),          # 90 rounds fewer, 30 each
                     cell("in", "hardware-assist", rounds=10, instructions=300, exits=10),
                     cell("in", "binary-translation", rounds=10, instructions=300, traps=10, blocks=2)])
    table = vc.paper_beside_ours(shorter, WORKLOADS, longer=suite)
    row = next(r for r in table.rows if r[0] == "in")
    # one round: 30 instructions (30 ns) natively, and one exit (10 µs) or one trap (20 µs) on top
    assert row[4] == "668×" and row[5] == "334×" and row[6] == "—"
    assert "one loop round" in table.caption
    assert "per round" in vc.paper_plot(shorter, WORKLOADS, longer=suite).text


def test_the_paper_beside_ours_pairs_each_benchmark_with_the_workload_that_mirrors_it(suite):
    assert vc.mirrored(suite, WORKLOADS) == [("syscall", "syscall"), ("in", "in"), ("call/ret", "call-ret"),
                                             ("ptemod", "ptemod")]        # no pgfault in this suite
    table = vc.paper_beside_ours(suite, WORKLOADS)
    row = next(r for r in table.rows if r[0] == "in")
    assert row[2] == "0.067×" and row[3] == "4.9×"
    assert row[5] == "334×"
    assert next(r for r in table.rows if r[0] == "syscall")[2] == "native + ≈2,000"   # words, no invented number


def test_the_plots_carry_their_numbers_as_text(suite):
    plot = vc.slowdown_plot(suite)
    assert "syscall: trap & emulate 2,001×" in plot.text and "real KVM did not run" in plot.text
    assert plot.png()[:4] == b"\x89PNG"
    paper = vc.paper_plot(suite, WORKLOADS)
    assert "hardware VMM: in 4.9×" in paper.text


def test_the_cost_model_is_drawn_and_tabled_from_the_fitted_costs(suite):
    model = Model()
    diagram = vc.cost_diagram(model)
    assert "trap-and-emulate: guest instructions run on the CPU (1 ns each); privileged instruction: #GP -> " \
           "VMM emulates it (20.0 µs per trap)" in diagram.text
    assert "paravirt: guest instructions run on the CPU; int 0x82" in diagram.text     # not fitted: no numbers
    row = next(r for r in vc.cost_table(model).rows if r[0] == "trap & emulate")
    assert row == ["trap & emulate", "1.0", "20.00", "10.00", "5.00", "50.00"]
    # a model that fits its data exactly has no residual
    table = vc.residuals_table(model, suite)
    assert all(r[-1] == "+0%" for r in table.rows)
    assert f"within ±25%: {len(table.rows)} of {len(table.rows)} runs" in table.caption


def test_a_designed_workload_is_predicted_from_one_round_of_each_part(suite):
    model = Model()
    counts = vc.design_counts(suite, "trap-and-emulate", {"syscall": 10, "in": 5}, instructions=1000)
    # one syscall round: 20 instructions, 2 traps; one in round: 30 instructions, 1 trap
    assert counts == {"instructions": 1000 + 200 + 150, "traps": 25, "exits": 0, "hypercalls": 0, "blocks": 0}
    predicted = vc.predict_design(model, suite, {"syscall": 10})
    assert predicted["kvm"] is None                          # it cannot run a system call here
    assert predicted["trap-and-emulate"] == pytest.approx(200e-9 + 20 * 20e-6)


def test_the_designer_updates_its_bars_and_checks_them_against_real_runs(suite):
    model = Model()
    calls = []

    def measure(name, technique, rounds):
        calls.append((name, technique, rounds))
        m = next(x for x in suite.measurements if x.workload == name and x.technique == technique)
        return M(name, technique, ran=m.ran, rounds=rounds, seconds=m.seconds / m.rounds * rounds)

    designer = vc.Designer(model, suite, measure=measure)
    designer.sliders["syscall"].value = 50
    assert "trap-and-emulate: 2" in designer.plot.text            # 50 * 2 traps * 20 µs + instructions
    measured = designer.check()
    assert ("syscall", "trap-and-emulate", 50) in calls
    assert measured["kvm"] is None
    assert measured["trap-and-emulate"] == pytest.approx(predict := vc.predict_design(model, suite, {"syscall": 50})
                                                         ["trap-and-emulate"])
    assert f"{predict * 1e3:.2f} ms measured" in designer.plot.text
    assert vc.Designer(model, suite).button.disabled                # no way to run: predict only


def test_every_designer_slider_shows_its_value_beside_it(suite):
    """The readout is on, the description has its room, and the column of sliders does not shrink:
    squeezed by the plot beside it, a slider's readout slides under the picture (seen in JupyterLab)."""
    designer = vc.Designer(Model(), suite)
    sliders = list(designer.sliders.values()) + [designer.instructions]
    for slider in sliders:
        assert slider.readout and slider.readout_format == ",d"
        assert slider.style.description_width == "120px"
        assert slider.layout.width == slider.layout.min_width == "440px"
    controls = designer.children[0].children[0]
    assert controls.layout.flex == "0 0 auto" and controls.layout.min_width == "450px"
    assert sliders[0] in controls.children


def test_one_rounds_counts_are_the_difference_of_two_suites_divided_by_the_rounds(suite):
    small = Suite(syscall_cells(1100, rounds=10))
    # the large suite: 90 more rounds of 10 instructions, 2 traps (T&E) and 1 trap (BT); the blocks stay
    assert vc.round_counts(small, suite, "syscall", "trap-and-emulate") == {
        "instructions": 10, "traps": 2, "exits": 0, "hypercalls": 0, "blocks": 0,
        "hidden_faults": 0, "true_faults": 0, "trace_faults": 0, "trace_callouts": 0,
        "cr_exits": 0, "invlpg_exits": 0, "pf_exits": 0, "ept_violations": 0, "tlb_misses": 0, "walk_references": 0,
        "bounces": 0, "mmu_updates": 0, "pt_updates": 0}
    table = vc.round_counts_table(small, suite)
    assert table.rows[0] == ["syscall", "10", "none", "2 traps", "1 trap", "none", "—"]
    assert table.rows[1][2:] == ["—"] * 5          # not in the small suite: nothing to subtract


def test_one_rounds_shadow_mmu_events_show_among_its_traps(suite):
    small = Suite([cell("ptemod", "native", rounds=10, instructions=4100),
                   cell("ptemod", "trap-and-emulate", rounds=10, instructions=4100, traps=40, hidden_faults=8,
                        trace_faults=10),
                   cell("ptemod", "binary-translation", rounds=10, instructions=4100, traps=41, blocks=38,
                        hidden_faults=8, trace_faults=2, trace_callouts=9)])
    row = dict(zip(vc.round_counts_table(small, suite).header,
                   next(r for r in vc.round_counts_table(small, suite).rows if r[0] == "ptemod")))
    # 90 more rounds: 90 more traps, each a trace fault (trap-and-emulate) or a call-out (binary translation)
    assert row["trap & emulate"] == "1 trap (1 trace fault)"
    assert row["binary transl."] == "1 trap (1 trace call-out)"


def paravirt_paging(rounds, lazy=False):
    """pgfault and ptemod as Xen counts them: the boot's cpuid trap and seven hypercalls, then a bounce
    a round (pgfault, after one mmu_update) or an mmu_update a round (ptemod; in lazy MMU mode one for
    every 32 rounds)."""
    calls = -(-rounds // 32) if lazy else rounds
    technique = "paravirt/lazy-mmu" if lazy else "paravirt"
    return [cell("pgfault", technique, rounds=rounds, traps=rounds + 1, bounces=rounds, hypercalls=8, mmu_updates=1,
                 pt_updates=1),
            cell("ptemod", technique, rounds=rounds, traps=1, hypercalls=calls + 7, mmu_updates=calls, pt_updates=rounds)]


def test_the_paravirt_cells_show_xens_bounces_and_mmu_updates():
    small, large = (Suite(paravirt_paging(n) + paravirt_paging(n, lazy=True)) for n in (64, 320))
    rows = {r[0]: dict(zip(vc.counts_table(large).header, r)) for r in vc.counts_table(large).rows}
    assert rows["pgfault"]["paravirt"] == "321 traps (320 bounced) · 8 hypercalls (1 mmu_update: 1 PTE)"
    assert rows["ptemod"]["paravirt"] == "1 trap · 327 hypercalls (320 mmu_updates: 320 PTEs)"
    assert rows["ptemod"]["paravirt, lazy MMU"] == "1 trap · 17 hypercalls (10 mmu_updates: 320 PTEs)"
    per = {r[0]: dict(zip(vc.round_counts_table(small, large).header, r)) for r in vc.round_counts_table(small, large).rows}
    assert per["pgfault"]["paravirt"] == "1 trap (1 bounced)"
    assert per["ptemod"]["paravirt"] == "1 hypercall (1 mmu_update: 1 PTE)"
    assert per["ptemod"]["paravirt, lazy MMU"] == "0.03 hypercalls (0.03 mmu_updates: 1 PTE)"     # 8 in 256 rounds
    assert vc.round_counts(small, large, "ptemod", "paravirt/lazy-mmu")["mmu_updates"] == 1 / 32
    assert "Xen bounced" in vc.counts_table(large).caption and "mmu_updates" in vc.round_counts_table(small, large).caption
    assert "paravirt: guest instructions run on the CPU; int 0x82 (mmu_update: a PTE)" in vc.cost_diagram().text
    assert vc.COLOURS["paravirt/lazy-mmu"] != vc.COLOURS["paravirt"]


def test_a_round_too_cheap_to_time_natively_shows_the_techniques_own_round(suite):
    shorter = Suite([cell("ptemod", "native", rounds=10, instructions=4100),
                     cell("ptemod", "binary-translation", rounds=10, instructions=4100, traps=41, blocks=38,
                          trace_callouts=9, spread=1e-9)])
    shorter.cell("ptemod", "native").spread = 1e-3            # native: lost in the repeats' disagreement
    table = vc.paper_beside_ours(shorter, WORKLOADS, longer=suite)
    row = next(r for r in table.rows if r[0] == "ptemod")
    assert row[2:4] == ["391 cycles", "12,733 cycles"]           # the paper gives no native number
    assert row[4] == "20.0 µs a round (native's: too small to time)"   # one trap (20 µs), 10 ns of instructions


def rounds_of(trace_faults, callouts, seconds):
    return [compare.Round(n, s, {"traps": t + c, "hidden_faults": 0, "true_faults": 0, "trace_faults": t,
                                 "trace_callouts": c})
            for n, (t, c, s) in enumerate(zip(trace_faults, callouts, seconds), 1)]


def test_the_adaptive_table_and_plot_read_round_by_rounds_runs():
    n = 12
    on = [rounds_of([1, 1] + [0] * (n - 2), [0] + [1] * (n - 1), [5e-3] + [s] * (n - 1)) for s in (4e-4, 6e-4, 5e-4)]
    off = [rounds_of([1] * n, [0] * n, [5e-3] + [7e-4] * (n - 1))] * 3
    table = vc.adaptive_table(on, off)
    assert [r[0] for r in table.rows] == ["1", "2", "3", "4–10", "11–12"]
    assert table.rows[1] == ["2", "1", "1", "500", "1", "0", "700"]     # the median of the three runs' rounds
    assert table.rows[-1][1:3] == ["0", "1"] and table.rows[-1][4:6] == ["1", "0"]
    plot = vc.adaptive_plot(on, off)
    assert "adaptive on: 2 trace faults in 12 rounds (0 in the second half)" in plot.text
    assert "adaptive off: 12 trace faults in 12 rounds (6 in the second half); median 700 µs" in plot.text
    assert plot.png()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="exact"):
        vc.round_medians([on[0], off[0]])


# --- the VT-x model's three memory modes ---------------------------------------------------------------------
NO_EPT, ON_DEMAND = "hardware-assist/no-ept", "hardware-assist/ept-on-demand"


def memory_cells(rounds, technique_counts):
    """ptemod and pgfault as the memory techniques count them: made-up boot counts plus a round each."""
    boot = {"ptemod": {NO_EPT: dict(exits=30, cr_exits=2, invlpg_exits=1, pf_exits=8, hidden_faults=8),
                       ON_DEMAND: dict(exits=37, ept_violations=7, tlb_misses=16, walk_references=144),
                       "binary-translation": dict(traps=49, hidden_faults=8, trace_faults=2, blocks=38),
                       "hardware-assist": dict(exits=30)},
            "pgfault": {NO_EPT: dict(exits=34, cr_exits=2, pf_exits=3, hidden_faults=3),
                        ON_DEMAND: dict(exits=37, ept_violations=5, tlb_misses=9, walk_references=66),
                        "binary-translation": dict(traps=46, hidden_faults=4, blocks=40),
                        "hardware-assist": dict(exits=32)}}
    cells = []
    for name, techniques in boot.items():
        cells.append(cell(name, "native", rounds=rounds, instructions=4000 + 3 * rounds))
        for t, counts in techniques.items():
            counts = dict(counts)
            for k, v in technique_counts[name].get(t, {}).items():
                counts[k] = counts.get(k, 0) + v * rounds
            cells.append(cell(name, t, rounds=rounds, instructions=4000 + 3 * rounds, **counts))
    return Suite(cells)


PER_ROUND = {"ptemod": {NO_EPT: dict(exits=1, pf_exits=1, trace_faults=1), "binary-translation": dict(traps=1)},
             "pgfault": {NO_EPT: dict(exits=1, pf_exits=1, true_faults=1),
                         "binary-translation": dict(traps=3, true_faults=1)}}


def test_the_vt_x_models_memory_modes_are_columns_of_their_own_first_generation_first():
    assert vc.TECHNIQUES == compare.COLUMNS
    assert [vc.SHORT[t] for t in ("hardware-assist/no-ept", "hardware-assist", "hardware-assist/ept-on-demand")] == \
        ["VT-x, no EPT", "VT-x, EPT", "VT-x, EPT on demand"]
    assert set(vc.COLOURS) == set(vc.SHORT) == set(compare.COLUMNS) | set(compare.VARIANTS)
    assert len(set(vc.COLOURS.values())) == len(vc.COLOURS)
    suite = memory_cells(50, PER_ROUND)
    assert vc.counts_table(suite).header[3:] == ["native", "binary transl.", "VT-x, no EPT", "VT-x, EPT",
                                                 "VT-x, EPT on demand"]
    diagram = vc.cost_diagram()
    assert "#PF, CR3 load, invlpg -> shadow MMU" in diagram.text and "EPT violation -> KVM maps the frame" in diagram.text


def test_the_vt_x_models_memory_work_shows_in_brackets_after_its_exits():
    suite = memory_cells(50, PER_ROUND)
    row = dict(zip(vc.counts_table(suite).header, next(r for r in vc.counts_table(suite).rows if r[0] == "ptemod")))
    # without EPT the shadow MMU's faults are among the #PF exits, as they are among the traps of a software VMM
    assert row["VT-x, no EPT"] == "80 exits (2 CR accesses; 1 INVLPG; 58 #PF: 8 hidden faults, 50 trace faults)"
    assert row["VT-x, EPT on demand"] == "37 exits (7 EPT violations) · 16 TLB misses (144 walk references)"
    assert row["VT-x, EPT"] == "30 exits"
    assert row["binary transl."] == "99 traps (8 hidden faults, 2 trace faults) · 38 blocks"
    small = memory_cells(10, PER_ROUND)
    per = dict(zip(vc.round_counts_table(small, suite).header,
                   next(r for r in vc.round_counts_table(small, suite).rows if r[0] == "pgfault")))
    assert per["VT-x, no EPT"] == "1 exit (1 #PF: 1 true fault)"
    assert per["VT-x, EPT on demand"] == per["VT-x, EPT"] == "none"
    assert vc.round_counts(small, suite, "ptemod", NO_EPT)["pf_exits"] == 1


def test_the_headline_table_sets_the_papers_software_and_hardware_vmm_beside_ours():
    small, suite, longer = (memory_cells(n, PER_ROUND) for n in (10, 50, 250))
    table = vc.headline_table(small, suite, longer)
    assert table.header == ["workload", "software VMM", "hardware VMM", "hardware ÷ software", "binary transl.",
                            "VT-x, no EPT", "hardware ÷ software"]
    pgfault, ptemod = table.rows
    assert pgfault[:4] == ["pgfault", "3,927", "11,242", "2.9×"] and ptemod[:4] == ["ptemod", "391", "12,733", "33×"]
    # one round: 3 ns of instructions plus 3 traps (60 µs) against 1 exit (10 µs); 1 trap against 1 exit
    assert pgfault[4] == "3 traps (1 true fault); 60.0 µs" and pgfault[5] == "1 exit (1 #PF: 1 true fault); 10.0 µs"
    assert pgfault[6] == "0.17×" and ptemod[6] == "0.5×"
    assert "first-generation VT-x" in table.caption and "Figure 4" in table.caption
    assert vc.headline_ratios(suite, longer) == {"pgfault": (pytest.approx(11242 / 3927), pytest.approx(1 / 6, rel=1e-3)),
                                                 "ptemod": (pytest.approx(12733 / 391), pytest.approx(0.5, rel=1e-3))}
    plot = vc.headline_plot(suite, longer)
    assert "Adams & Agesen: VT-x ÷ BT (cycles): pgfault 2.9×, ptemod 33×" in plot.text
    assert "VT-x, no EPT ÷ binary transl. (µs): pgfault 0.17×, ptemod 0.5×" in plot.text
    assert plot.png()[:4] == b"\x89PNG"


def test_the_paper_beside_ours_shows_the_vt_x_modes_the_suite_has():
    suite = memory_cells(50, PER_ROUND)
    table = vc.paper_beside_ours(suite, WORKLOADS)
    assert table.header[4:] == ["binary transl.", "VT-x, no EPT", "VT-x, EPT", "VT-x, EPT on demand", "real KVM"]
    assert "without EPT" in table.caption
    plot = vc.paper_plot(suite, WORKLOADS)
    assert "VT-x, no EPT: pgfault" in plot.text
