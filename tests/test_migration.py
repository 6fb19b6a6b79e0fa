"""Live migration: the dirty log against the guest's real writes, Xen's stop conditions, a running
guest moved with its memory and its output intact on the model and on KVM, and faults that leave
the source running with nothing lost.

The model is reproducible: a guest whose writes are logged runs exactly as one whose writes are not,
so "nothing lost" is checked against a twin that was never migrated.
"""
import ctypes
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vmkit import migration as M
from vmkit.errors import VmkitError
from vmkit.kvm import api
from vmkit.kvm.probe import probe
from vmkit.migration.vms import GuestEnded, ModelVm, KvmVm

DATA_PAGE = 0x110000 // 4096          # the first page the writers write (vmkit/guests/dirty_writer.asm)
KERNEL_PAGE = 0x100000 // 4096        # the guest's code and its line counter
STACK_PAGE = 0x3FF000 // 4096


def need_kvm():
    why = probe().why_not("protected-mode")
    if why:
        pytest.skip(why)


def twin(guest, seconds):
    """A VM that ran `guest` for `seconds` and was never migrated: what the source must look like."""
    vm = ModelVm(guest)
    vm.run_for(seconds)
    return vm


# --- the dirty log ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [ModelVm, KvmVm], ids=["model", "kvm"])
def test_the_dirty_log_names_exactly_the_pages_the_guest_writes(kind):
    """A steady writer with a working set of 8 pages: are those 8 pages, the line counter's page and
    the stack page dirty, and nothing else, round after round?"""
    if kind is KvmVm:
        need_kvm()
    vm = kind(M.workload("steady", wws_pages=8, work=500), tracked=True)
    try:
        vm.run_for(0.002)
        vm.start_dirty_log()
        want = {DATA_PAGE + i for i in range(8)} | {KERNEL_PAGE, STACK_PAGE}
        for _ in range(3):
            vm.run_for(0.01)
            assert set(vm.collect_dirty()) == want
        assert vm.collect_dirty() == []                  # get-and-clear: nothing ran since
    finally:
        vm.close()


def test_kvm_get_dirty_log_is_the_kernels_ioctl():
    assert ctypes.sizeof(api.kvm_dirty_log) == 16
    assert api.KVM_GET_DIRTY_LOG == 0x4010AE42
    assert api.KVM_MEM_LOG_DIRTY_PAGES == 1


@pytest.mark.parametrize("name", ["idle", "steady", "diabolical", "random"])
def test_logging_writes_does_not_change_what_the_guest_does(name):
    """Write protection is invisible to the guest: same output, memory and registers as a twin."""
    guest = M.workload(name, seed=5, pages=100)
    logged = ModelVm(guest, tracked=True)
    logged.run_for(0.002)
    logged.start_dirty_log()
    for _ in range(4):
        logged.run_for(0.003)
        logged.collect_dirty()
    plain = twin(guest, 0.014)
    assert logged.output == plain.output
    assert logged.digest() == plain.digest()
    assert logged.registers() == plain.registers()
    assert logged.log.faults > 0


# --- the link and Xen's stop conditions -------------------------------------------------------------

def test_the_link_takes_latency_plus_size_over_bandwidth():
    link = M.Link(mbit=1000, latency_ms=0.1)
    assert link.seconds(1024, 1000) == pytest.approx(0.0001 + 4 * 2**20 * 8 / 1e9)
    assert link.rate_for(None) == 1000


def test_the_adaptive_link_follows_the_dirty_rate_plus_50_mbit():
    link = M.Link(mbit=500, start_mbit=100, adaptive=True)
    assert link.rate_for(None) == 100
    slow = M.Round(1, 1024, 100, 0.01, 100)              # 100 pages in 10 ms: 327.68 Mbit/s
    assert link.rate_for(slow) == pytest.approx(100 * 4096 * 8 / 0.01 / 1e6 + 50)
    fast = M.Round(2, 100, 1000, 0.01, 400)
    assert link.rate_for(fast) == 500                    # never above the link's bandwidth


def rounds(*sent, mbit=1000, skipped=0, dirtied=100):
    """Made-up Round records: one per number of pages sent."""
    return [M.Round(i + 1, n, dirtied, 0.001, mbit, pages_skipped=skipped) for i, n in enumerate(sent)]


def test_xen_counts_the_pages_sent_and_skipped_in_the_round_just_finished():
    """xc_domain_save: sent_this_iter + skip_this_iter < 50, whatever is left dirty."""
    assert M.XEN.reason(rounds(1024, 49, dirtied=900), 1073, 1024, M.Link()) == "few pages sent"
    assert M.XEN.reason(rounds(1024, 50, dirtied=10), 1074, 1024, M.Link()) is None
    assert M.XEN.reason(rounds(1024, 30, skipped=20, dirtied=10), 1054, 1024, M.Link()) is None
    assert M.XEN.reason(rounds(1024, 30, skipped=19), 1054, 1024, M.Link()) == "few pages sent"


def test_xen_never_stops_after_its_full_first_round():
    assert M.XEN.reason(rounds(1024, dirtied=0), 1024, 1024, M.Link()) is None
    for name in ("idle", "steady"):
        result = M.migrate(M.workload(name, wws_pages=8), warmup=0.002)
        assert len(result.rounds) >= 2 and result.stop_reason == "few pages sent", result.summary()


def test_xen_runs_29_live_rounds_at_most():
    """DEF_MAX_ITERS = 29, "limit us to 30 times round loop": the stop-and-copy is the 30th."""
    assert M.XEN.max_rounds == 29
    assert M.XEN.reason(rounds(1024, *[60] * 27), 2644, 1024, M.Link()) is None
    assert M.XEN.reason(rounds(1024, *[60] * 28), 2704, 1024, M.Link()) == "max rounds"


def test_xen_stops_after_sending_three_times_the_memory():
    assert M.XEN.reason(rounds(1024, 1024), 3 * 1024, 1024, M.Link()) is None
    assert M.XEN.reason(rounds(1024, 1024), 3 * 1024 + 1, 1024, M.Link()) == "sent 3x memory"


def test_xens_rate_rule_compares_pages_sent_at_the_adaptive_links_maximum():
    """(sent_this_iter > sent_last_iter && RATE_IS_MAX()); RATE_IS_MAX() is 0 without ADAPTIVE_SAVE,
    and sent_last_iter starts as the memory size."""
    adaptive = M.Link(mbit=1000, start_mbit=100, adaptive=True)
    assert M.XEN.reason(rounds(1024, 300, 320), 1644, 1024, adaptive) == "rate limit"
    assert M.XEN.reason(rounds(1024, 300, 300), 1624, 1024, adaptive) is None
    assert M.XEN.reason(rounds(1024, 300, 320, mbit=600), 1644, 1024, adaptive) is None   # below its maximum
    assert M.XEN.reason(rounds(1024, 300, 320), 1644, 1024, M.Link(mbit=1000)) is None   # no adaptive rate
    assert M.XEN.reason(rounds(1000), 1000, 1024, adaptive) is None                      # fewer than the memory


def test_clarks_rule_stops_on_little_left_or_a_rate_above_the_maximum():
    """Clark et al., section 5.3: less than 256 KiB left, or the next round's rate (the dirty rate
    plus 50 Mbit/s) above the maximum."""
    link = M.Link(mbit=1000)
    slow = [M.Round(1, 1024, 63, 0.0336, 1000)]
    assert M.CLARK.reason(slow, 1024, 1024, link) == "little left"
    assert M.CLARK.reason([M.Round(1, 1024, 64, 0.0336, 1000)], 1024, 1024, link) is None
    fast = [M.Round(1, 1024, 1000, 0.0336, 1000)]                     # 975 Mbit/s dirtied, + 50 > 1000
    assert M.CLARK.reason(fast, 1024, 1024, link) == "rate above maximum"


def test_qemus_rule_stops_when_the_rest_fits_the_downtime_limit():
    """migration_iteration_run: pending < bandwidth x downtime-limit (300 ms by default)."""
    assert M.QEMU.downtime_limit == 0.3 and not M.QEMU.skip
    one_ms = dataclasses.replace(M.QEMU, downtime_limit=0.001)
    fits = 1e9 * 0.001 / (4096 * 8)                                      # 30.5 pages at 1 Gbit/s
    assert one_ms.reason([M.Round(1, 1024, 30, 0.0336, 1000)], 1024, 1024, M.Link()) == "fits the downtime limit"
    assert one_ms.reason([M.Round(1, 1024, 31, 0.0336, 1000)], 1024, 1024, M.Link()) is None
    assert 30 < fits < 31
    # a 4 MiB guest crosses a 1 Gbit/s link in 34 ms: with QEMU's default limit, round 1 is enough
    assert len(M.migrate(M.workload("diabolical"), stop=M.QEMU, warmup=0.002).rounds) == 1


def test_a_migration_that_never_converges_is_cancelled_and_the_source_runs_on():
    never = dataclasses.replace(M.QEMU, downtime_limit=0.0001, give_up_after=5)
    with pytest.raises(M.MigrationAborted, match="did not end the pre-copy in 5 rounds") as aborted:
        M.migrate(M.workload("diabolical"), stop=never, warmup=0.002)
    source = aborted.value.migration.source
    before = len(M.sequence(source.output))
    source.resume(0.002)
    assert len(M.sequence(source.output)) > before


def test_a_round_skips_pages_dirtied_again_and_a_later_round_sends_them():
    """Xen's peek: a page of the round dirtied since the round began is left out (skip_this_iter) and
    is dirty, so the next round's pages include it."""
    m = M.Migration(M.workload("steady", wws_pages=100), link=M.Link(mbit=1000), warmup=0.002)
    first = m.send(m.all_pages())
    skipped = set(m.events[-1].detail["skipped"])
    assert first.pages_skipped == len(skipped) > 0
    assert first.pages_sent + first.pages_skipped == 1024
    nxt = m.dirty_pages()
    assert skipped <= set(nxt) and len(nxt) == first.pages_dirtied
    second = m.send(nxt, skip=False)
    assert second.pages_sent == len(nxt) and second.pages_skipped == 0
    assert m.stop_and_copy(m.dirty_pages()).verified


def test_peeking_every_batch_sends_less_than_a_loop_that_never_peeks():
    guest = M.workload("steady", wws_pages=200)
    peeking = M.migrate(guest, warmup=0.002)
    blind = M.migrate(guest, warmup=0.002, stop=dataclasses.replace(M.XEN, skip=False))
    assert peeking.rounds[0].pages_sent < blind.rounds[0].pages_sent == 1024
    assert peeking.verified and blind.verified
    # Xen's own batch of 1,024 pages covers all of a 4 MiB guest: one peek, at the round's start
    whole = M.migrate(guest, warmup=0.002, peek_every=M.XEN_MAX_BATCH)
    assert whole.rounds[0].pages_skipped == 0


# --- migrating a running guest -------------------------------------------------------------------------

def test_a_running_guest_migrates_on_the_model_with_nothing_lost():
    """Steady writer, 1 Gbit/s: does the destination hold the source's memory at the switch-over,
    and does the peer see the lines go on from the destination with no gap and no repeat?"""
    result = M.migrate(M.workload("steady", wws_pages=16), link=M.Link(mbit=1000), warmup=0.003, after=0.02)
    assert result.memory_verified and result.output_continuous and result.verified
    first, last = result.rounds[0], result.rounds[-1]
    assert first.pages_sent + first.pages_skipped == 1024                # round 1: everything
    assert result.stop_reason == "few pages sent" and last.pages_sent + last.pages_skipped < 50
    assert result.final_pages == last.pages_dirtied == 18               # 16 + counter + stack
    assert result.transcript[-1] > result.switch_seq > 0               # the destination printed on
    assert result.downtime == pytest.approx(0.0001 + (18 * 4096 + result.state_bytes) * 8 / 1e9)
    phases = [e.detail["phase"] for e in result.events]
    assert phases == ["round", "round", "stop-and-copy", "activate"]
    assert result.destination.registers()["eip"] != 0


def test_a_running_guest_migrates_on_kvm_with_nothing_lost():
    need_kvm()
    result = M.migrate(M.workload("steady", wws_pages=16, work=2000), where="kvm", warmup=0.01, after=0.02)
    assert result.where == "kvm"
    assert result.verified, result.summary()
    assert result.transcript[-1] > result.switch_seq > 0
    result.destination.close()
    result.source.close()


def test_the_diabolical_writer_is_caught_by_a_stop_condition_and_still_arrives_whole():
    result = M.migrate(M.workload("diabolical"), link=M.Link(mbit=1000), warmup=0.002, after=0.002)
    assert result.stop_reason in ("sent 3x memory", "rate limit", "max rounds")
    assert all(r.pages_dirtied >= 700 for r in result.rounds)          # it never converges
    assert result.final_pages >= 700 and result.downtime > 0.02
    assert result.verified


def test_downtime_grows_with_the_writable_working_set():
    downtimes = [M.migrate(M.workload("steady", wws_pages=n), warmup=0.002).downtime for n in (4, 32, 128)]
    assert downtimes[0] < downtimes[1] < downtimes[2]


def test_a_slow_writer_leaves_fewer_dirty_pages_each_shorter_round():
    """Writes spread over 700 pages, slowly: does each round, shorter than the one before, leave
    fewer pages dirty, until a round sends (or skips) fewer than 50 pages?"""
    result = M.migrate(M.workload("random", pages=700, pace=3000, seed=2), warmup=0.002)
    dirtied = [r.pages_dirtied for r in result.rounds]
    assert dirtied == sorted(dirtied, reverse=True) and len(set(dirtied)) == len(dirtied) >= 3
    assert result.stop_reason == "few pages sent" and result.verified
    assert [r.pages_sent + r.pages_skipped for r in result.rounds[1:]] == dirtied[:-1]   # each round sends the last's


def test_the_stop_and_copy_goes_at_the_links_full_rate():
    result = M.migrate(M.workload("steady", wws_pages=8), link=M.Link(mbit=1000, start_mbit=100, adaptive=True))
    assert result.rounds[0].mbit == 100
    assert result.downtime == pytest.approx(0.0001 + (result.final_pages * 4096 + result.state_bytes) * 8 / 1e9)


def test_an_idle_guest_needs_two_rounds_under_xen_and_one_under_clark():
    result = M.migrate(M.workload("idle"), warmup=0.002, after=0.002)
    assert len(result.rounds) == 2 and result.stop_reason == "few pages sent" and result.verified
    result = M.migrate(M.workload("idle"), warmup=0.002, after=0.002, stop=M.CLARK)
    assert len(result.rounds) == 1 and result.stop_reason == "little left" and result.verified


def test_leaving_out_a_dirty_page_is_caught_by_the_digest():
    m = M.Migration(M.workload("steady", wws_pages=8), warmup=0.002)
    m.send(m.all_pages())
    dirty = m.dirty_pages()
    result = m.stop_and_copy(dirty[1:])                  # forgot one
    assert not result.memory_verified and not result.verified
    assert "memory differs" in result.summary()


# --- faults: the source runs on, nothing lost ------------------------------------------------------------

@pytest.mark.parametrize("fault", ["link drops in round 2", "destination dies in round 2",
                                   "destination dies in the stop-and-copy"])
def test_a_failed_migration_leaves_the_source_running_with_nothing_lost(fault):
    guest = M.workload("steady", wws_pages=100)
    link = M.Link(mbit=1000, fail_after_pages=1024 + 40 if "link" in fault else None)
    dies = {"destination dies in round 2": 2, "destination dies in the stop-and-copy": "stop-and-copy"}.get(fault)
    m = M.Migration(guest, link=link, warmup=0.002, destination_dies_at=dies)
    with pytest.raises(M.MigrationAborted, match="source VM runs on"):
        m.send(m.all_pages())
        m.send(m.dirty_pages())
        m.stop_and_copy(m.dirty_pages())
    ran = 0.002 + sum(r.seconds for r in m.rounds)
    m.source.run_for(0.004)                                             # it goes on running
    same = twin(guest, ran + 0.004)
    assert m.source.output == same.output and m.source.digest() == same.digest()
    assert M.sequence(m.source.output) == list(range(1, len(M.sequence(m.source.output)) + 1))
    assert not m.source.log.logging                                     # write protection is off
    with pytest.raises(VmkitError, match="aborted"):
        m.send([0])


# --- what goes wrong is said clearly ----------------------------------------------------------------------

def test_mistakes_get_clear_errors():
    with pytest.raises(VmkitError, match="no workload named 'busy'"):
        M.workload("busy")
    with pytest.raises(VmkitError, match="'model'.*'kvm'"):
        M.Migration(M.workload("idle"), where="xen")
    m = M.Migration(M.workload("idle"))
    with pytest.raises(VmkitError, match="page numbers run from 0 to 1023"):
        m.send([1024])
    m.stop_and_copy(m.all_pages())
    with pytest.raises(VmkitError, match="ended"):
        m.send([0])
    with pytest.raises(GuestEnded, match="keeps running"):
        M.Migration("mov al, 0\nout 0xf4, al\nhlt", warmup=0.001)


# --- properties: any writes, any moment, any link ----------------------------------------------------------

@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), pages=st.integers(1, 400), work=st.integers(50, 5000),
       warmup=st.floats(0.0, 0.01), mbit=st.sampled_from([300, 1000, 4000]))
def test_the_destination_always_ends_with_the_sources_memory_and_state(seed, pages, work, warmup, mbit):
    guest = M.workload("random", seed=seed, pages=pages, work=work)
    result = M.migrate(guest, link=M.Link(mbit=mbit), warmup=warmup)
    assert result.memory_verified, result.summary()
    assert result.destination.registers() == result.source.registers()
    assert result.destination.machine.clock == result.source.machine.clock
    assert result.output_continuous


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_schedule_that_resends_what_was_dirtied_arrives_whole(seed, data):
    """Rounds of any size in any order (a lab's own loop): as long as every page dirtied after it was
    last sent is sent again before the switch-over, the destination holds the source's memory."""
    m = M.Migration(M.workload("random", seed=seed, pages=64, work=300), link=M.Link(mbit=2000), warmup=0.001)
    owed = set(m.all_pages())                            # pages the destination does not have right
    for _ in range(data.draw(st.integers(1, 4), label="rounds")):
        chosen = data.draw(st.sets(st.sampled_from(range(m.memory_pages)), max_size=300), label="pages")
        m.send(chosen)
        owed = (owed - chosen) | set(m.dirty_pages())
    result = m.stop_and_copy(owed)
    assert result.memory_verified, result.summary()


# --- edge cases: nothing crosses a dead link, and every argument is checked ---------------------------------

def test_the_vcpu_and_device_state_cross_the_link_too():
    """A stop-and-copy with no page left over a link that is down: the state cannot cross, so the
    switch-over aborts and the source runs on."""
    m = M.Migration(M.workload("steady", wws_pages=8), link=M.Link(mbit=1000), warmup=0.001)
    m.send(m.all_pages())
    m.link.fail_after_pages = m.link.pages_carried              # the link goes down now
    with pytest.raises(M.MigrationAborted, match="before the vCPU and device state crossed"):
        m.stop_and_copy([])
    assert m.state == "aborted"


@pytest.mark.parametrize("link", [dict(mbit=float("nan")), dict(mbit=float("inf")), dict(mbit=0), dict(mbit=-5),
                                  dict(start_mbit=float("nan")), dict(latency_ms=float("nan")),
                                  dict(latency_ms=-1), dict(fail_after_pages=-1), dict(fail_after_pages=2.5)])
def test_a_link_with_no_finite_positive_rate_is_refused(link):
    with pytest.raises(VmkitError, match="a link needs|fail_after_pages"):
        M.Link(**link)


@pytest.mark.parametrize("dies_at", ["activate", 0, -1, 1.5, True, "round 2"])
def test_every_value_of_destination_dies_at_is_checked(dies_at):
    with pytest.raises(VmkitError, match="destination_dies_at is a round number"):
        M.Migration(M.workload("steady", wws_pages=8), destination_dies_at=dies_at)


def test_a_migration_that_would_take_forever_is_stopped_by_its_guest_time_limit():
    """1,024 pages at 1 kbit/s would take hours of guest time, all of it simulated: the round is
    refused before it starts, and the source runs on."""
    m = M.Migration(M.workload("steady", wws_pages=8), link=M.Link(mbit=0.001))
    with pytest.raises(M.MigrationAborted, match="max_guest_seconds"):
        m.send(m.all_pages())
    with pytest.raises(M.MigrationAborted, match="max_guest_seconds"):
        M.migrate(M.workload("steady", wws_pages=8), link=M.Link(mbit=0.001))
