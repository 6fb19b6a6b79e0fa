"""vmkit.isolation decides the way SELinux's security server does with the MCS policy sVirt uses.

Each test names, in its docstring, the rule of SELinux, MCS or libvirt it checks."""
import itertools

import pytest

from vmkit.isolation import (MCS_CONSTRAINTS, POLICY, Context, File, Level, McsAllocator, MlsRange,
                             Policy, Process, dac_check, scenario)


def decide(scontext, tcontext, tclass, perms):
    """POLICY's verdicts as plain data (lab 7 asks students for this function, so vmkit has none)."""
    return dict(POLICY.decide(scontext, tcontext, tclass, perms).verdicts)


def allocations(seed, count, first=0, last=1023):
    """`count` labels from a fresh allocator, as strings."""
    allocator = McsAllocator(seed, first, last)
    return [str(allocator.allocate()) for _ in range(count)]

VM1 = "system_u:system_r:svirt_t:s0:c12,c34"
VM2 = "system_u:system_r:svirt_t:s0:c56,c78"
IMG1 = "system_u:object_r:svirt_image_t:s0:c12,c34"
IMG2 = "system_u:object_r:svirt_image_t:s0:c56,c78"
LIBVIRTD = "system_u:system_r:virtd_t:s0-s0:c0.c1023"
ADMIN = "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"


# --- parsing and printing ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [VM1, IMG2, LIBVIRTD, ADMIN, "system_u:object_r:virt_content_t:s0",
                                  "user_u:user_r:user_t:s0-s0:c1,c5.c9", "a_u:b_r:c_t:s2:c0,c1023"])
def test_contexts_round_trip(text):
    """Context syntax: user:role:type:range, where the range itself is low[-high] and a level is
    sensitivity[:categories]; printing what was parsed gives the same string."""
    assert str(Context.parse(text)) == text


def test_category_ranges_are_expanded_and_printed_as_the_kernel_prints_them():
    """MLS syntax: cA.cB is every category from A to B; the kernel prints a run of three or more
    consecutive categories as cA.cB and shorter runs with commas (mls_sid_to_context)."""
    assert Level.parse("s0:c0.c1023").categories == frozenset(range(1024))
    assert str(Level.parse("s0:c3,c1,c2,c7,c8")) == "s0:c1.c3,c7,c8"
    assert str(Level.parse("s0:c4.c5")) == "s0:c4,c5"
    assert str(MlsRange.parse("s0-s0")) == "s0"


@pytest.mark.parametrize("bad", ["system_u:system_r:svirt_t", "u:r:t:x0", "u:r:t:s0:c1024", "u:r:t:s0:c9.c2",
                                 "u:r:t:s0:c5-s0:c6"])
def test_malformed_contexts_are_refused(bad):
    """MLS: categories exist only up to c1023, a range's high level must dominate its low level."""
    with pytest.raises(ValueError):
        Context.parse(bad)


# --- dominance ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b, expected", [
    ("s0:c12,c34", "s0:c12,c34", True),         # equal levels dominate each other
    ("s0:c12,c34", "s0", True),                 # every level dominates s0 with no categories
    ("s0", "s0:c12,c34", False),
    ("s0:c12,c34", "s0:c12", True),             # a superset of categories
    ("s0:c12", "s0:c12,c34", False),
    ("s0:c12,c34", "s0:c12,c35", False),        # sharing one category is not enough
    ("s0:c0.c1023", "s0:c56,c78", True),
    ("s1:c1", "s0:c1", True),                   # higher sensitivity, same categories
    ("s0:c1", "s1:c1", False),
    ("s1", "s0:c1", False),                     # higher sensitivity does not make up for a category
])
def test_dominance(a, b, expected):
    """MLS: level a dominates level b iff sens(a) >= sens(b) and cats(a) is a superset of cats(b)."""
    assert Level.parse(a).dominates(Level.parse(b)) is expected


# --- decisions -----------------------------------------------------------------------------------------
def test_a_vm_may_read_write_and_map_its_own_image():
    """TE: allow svirt_t svirt_image_t:file { ... read write open getattr map }; MCS: a subject may read
    or write a file when its level dominates the file's (equal levels do)."""
    d = POLICY.decide(VM1, IMG1, "file", ["open", "read", "write", "getattr", "map", "lock"])
    assert d.allowed and not d.denied and d.check is None and d.audit() is None
    assert d.rule.source == "svirt_t" and d.rule.target == "svirt_image_t"


def test_mcs_denies_another_vms_image_though_type_enforcement_allows_it():
    """MCS: mlsconstrain file { read ... } and { write ... } ((h1 dom h2) or (t1 != mcs_constrained_type)):
    svirt_t is MCS-constrained, and s0:c12,c34 does not dominate s0:c56,c78."""
    d = POLICY.decide(VM1, IMG2, "file", ["open", "read", "write"])
    assert POLICY.rule_for("svirt_t", "svirt_image_t", "file") is not None
    assert d.verdicts == {"open": "allowed", "read": "mcs", "write": "mcs"}
    assert d.denied == ("read", "write") and d.check == "mcs" and not d.allowed
    assert "does not dominate" in d.explain() and "c56,c78" in d.explain()


def test_open_getattr_and_map_are_not_category_checked():
    """MCS: the file constraints cover read/write-like permissions (ioctl read lock execute; write
    setattr append unlink link rename), not open, getattr or map: those pass on TE alone."""
    assert decide(VM1, IMG2, "file", ["open", "getattr", "map"]) == {"open": "allowed", "getattr": "allowed",
                                                                     "map": "allowed"}
    assert decide(VM1, IMG2, "file", ["ioctl", "lock", "append"]) == {"ioctl": "mcs", "lock": "mcs",
                                                                      "append": "mcs"}


def test_a_category_pair_does_not_dominate_a_pair_it_shares_one_category_with():
    """MCS: dominance needs every category of the object: c12,c34 against c12,c99 fails."""
    assert decide(VM1, "system_u:object_r:svirt_image_t:s0:c12,c99", "file", ["read"]) == {"read": "mcs"}


def test_shared_content_at_s0_is_readable_by_every_vm_but_not_writable():
    """MCS: every level dominates s0, so content labelled s0 is shared; TE: svirt_t gets only read-like
    permissions on virt_content_t, so writing is refused by type enforcement."""
    iso = "system_u:object_r:virt_content_t:s0"
    for vm in (VM1, VM2):
        assert decide(vm, iso, "file", ["open", "read"]) == {"open": "allowed", "read": "allowed"}
    assert decide(VM1, iso, "file", ["write"]) == {"write": "te"}


def test_type_enforcement_denies_what_no_rule_allows_whatever_the_levels():
    """TE: what no allow rule grants is denied (default deny), before any constraint is looked at."""
    d = POLICY.decide(VM1, "unconfined_u:object_r:user_home_t:s0", "file", ["open", "read"])
    assert d.verdicts == {"open": "te", "read": "te"} and d.check == "te" and not d.failed
    assert "no allow rule" in d.explain()
    assert decide(VM1, "system_u:object_r:shadow_t:s0", "file", ["read"]) == {"read": "te"}


def test_unconstrained_domains_are_not_category_checked():
    """MCS: the constraints end in (t1 != mcs_constrained_type): libvirtd and an unconfined admin (with
    s0-s0:c0.c1023 anyway) pass, and even at s0 an unconstrained domain would not be checked."""
    assert decide(LIBVIRTD, IMG2, "file", ["read", "write"]) == {"read": "allowed", "write": "allowed"}
    assert decide(ADMIN, IMG1, "file", ["read", "write"]) == {"read": "allowed", "write": "allowed"}
    admin_at_s0 = "unconfined_u:unconfined_r:unconfined_t:s0"
    assert decide(admin_at_s0, IMG2, "file", ["read"]) == {"read": "allowed"}


def test_relabelto_needs_dominance_and_a_single_level():
    """MCS: mlsconstrain file { create relabelto } ((h1 dom h2) and (l2 eq h2)), for every subject:
    libvirtd may relabel an image to s0:c56,c78, but not to a range."""
    assert decide(LIBVIRTD, IMG2, "file", ["relabelto"]) == {"relabelto": "allowed"}
    ranged = "system_u:object_r:svirt_image_t:s0-s0:c56,c78"
    assert decide(LIBVIRTD, ranged, "file", ["relabelto"]) == {"relabelto": "mcs"}


def test_one_vm_may_not_signal_another_though_self_rules_allow_signals():
    """TE: allow svirt_t self:process signal covers every process of type svirt_t; MCS:
    mlsconstrain process { sigkill sigstop signal } (h1 dom h2 ...) stops it between VMs."""
    assert decide(VM1, VM1, "process", ["signal"]) == {"signal": "allowed"}
    assert decide(VM1, VM2, "process", ["signal"]) == {"signal": "mcs"}
    assert decide(LIBVIRTD, VM2, "process", ["sigkill"]) == {"sigkill": "allowed"}
    assert decide(VM1, VM2, "process", ["ptrace"]) == {"ptrace": "te"}


def test_a_decision_is_te_and_then_constraints_for_every_combination():
    """The security server: allowed = the TE allow rule's permissions minus those an applicable
    constraint refuses (context_struct_compute_av), checked against a direct reading of the rules."""
    contexts = [VM1, VM2, IMG1, IMG2, LIBVIRTD, ADMIN, "system_u:object_r:virt_content_t:s0",
                "system_u:object_r:svirt_image_t:s0:c12", "system_u:system_r:svirt_t:s0:c12"]
    for s, t in itertools.product(contexts, contexts):
        sc, tc = Context.parse(s), Context.parse(t)
        for tclass in ("file", "process"):
            rule = POLICY.rule_for(sc.type, tc.type, tclass)
            for perm in ("read", "write", "open", "map", "relabelto", "signal", "sigkill", "transition"):
                got = decide(s, t, tclass, [perm])[perm]
                if not rule or perm not in rule.perms:
                    assert got == "te"
                    continue
                refused = any(c.tclass == tclass and perm in c.perms and
                              (c.applies_to is None or sc.type in c.applies_to) and
                              (not sc.high.dominates(tc.high) or (c.single_level_object and tc.low != tc.high))
                              for c in MCS_CONSTRAINTS)
                assert got == ("mcs" if refused else "allowed"), (s, t, tclass, perm)


def test_permissive_mode_logs_the_denial_but_allows_it():
    """SELinux permissive mode: the AVC message is logged with permissive=1 and the access goes through."""
    d = Policy(enforcing=False).decide(VM1, IMG2, "file", ["write"])
    assert d.denied == ("write",) and d.allowed and d.audit().endswith("permissive=1")


def test_the_audit_line_reads_like_the_kernels():
    """AVC record: avc:  denied  { perms in the class's order } for  pid= comm= name= ... scontext=
    tcontext= tclass= permissive=."""
    s = scenario()
    access = next(a for a in s.accesses if a.obj is s.vms[1][1] and "open" in a.perms)
    line = access.svirt().audit()
    assert line.startswith("avc:  denied  { read write } for  pid=4242 comm=\"qemu-kvm\" name=\"vm2.img\"")
    assert f"scontext={s.vms[0][0].context} tcontext={s.vms[1][1].context} tclass=file permissive=0" in line


# --- libvirt's allocator -------------------------------------------------------------------------------
def test_allocation_never_repeats_a_pair_and_uses_two_distinct_categories():
    """libvirt (virSecuritySELinuxMCSFind): each VM gets two distinct categories c0..c1023 and no pair in use
    is handed out again; the same seed gives the same labels."""
    allocator = McsAllocator(seed=7)
    levels = [allocator.allocate() for _ in range(2000)]
    assert len(set(levels)) == len(levels)
    assert all(len(l.categories) == 2 and l.sensitivity == 0 and max(l.categories) < 1024 for l in levels)
    assert allocations(7, 5) == [str(l) for l in levels[:5]]


def test_no_vm_dominates_another():
    """MCS with distinct pairs: no two different pairs dominate each other (a single category would be
    dominated by every pair holding it, which is why libvirt never hands one out)."""
    levels = [Level.parse(l) for l in allocations(3, 300)]
    assert not any(a.dominates(b) for a, b in itertools.permutations(levels, 2))


def test_a_small_range_runs_out_and_released_pairs_come_back():
    """libvirt: the pairs come from libvirtd's own category range; four categories give six pairs."""
    allocator = McsAllocator(seed=1, first=0, last=3)
    levels = {allocator.allocate() for _ in range(6)}
    assert levels == {Level(0, frozenset(p)) for p in itertools.combinations(range(4), 2)}
    with pytest.raises(RuntimeError):
        allocator.allocate()
    allocator.release("s0:c1,c3")
    assert str(allocator.allocate()) == "s0:c1,c3"


def test_reserved_pairs_are_skipped():
    """libvirt: labels of VMs already running are reserved before new ones are drawn."""
    allocator = McsAllocator(seed=1, first=0, last=2)
    allocator.reserve("s0:c0,c1")
    allocator.reserve("s0:c1,c2")
    assert str(allocator.allocate()) == "s0:c0,c2"


# --- DAC and the scenario -------------------------------------------------------------------------------
def test_dac_reads_owner_group_and_other_bits():
    """POSIX: the owner's bits apply to the owner, else the group's to the group, else the others'; root
    overrides read and write (CAP_DAC_OVERRIDE)."""
    f = File("/x", owner=107, group=107, mode=0o640, context="system_u:object_r:svirt_image_t:s0")
    p = lambda uid, gid: Process(1, "p", uid, gid, VM1)
    assert dac_check(p(107, 107), f, ["read", "write"]).allowed
    assert dac_check(p(5, 107), f, ["read"]).allowed and not dac_check(p(5, 107), f, ["write"]).allowed
    assert not dac_check(p(5, 5), f, ["read"]).allowed
    assert dac_check(p(0, 0), f, ["write"]).allowed


def test_the_scenario_dac_allows_every_attack_on_vm2_and_svirt_denies_each():
    """sVirt's point: both QEMUs run as uid qemu, so DAC lets VM 1 open, write, mmap and signal VM 2's
    resources; MCS denies each one, and VM 1 keeps its own image and the shared ISO."""
    s = scenario()
    (vm1, img1), (vm2, img2) = s.vms
    assert vm1.uid == vm2.uid and img2.owner == vm1.uid and vm1.context.low != vm2.context.low
    for access in s.accesses:
        dac, mac = access.dac(), access.svirt()
        assert dac.allowed, access.what                 # DAC cannot tell the two VMs apart
        if access.obj in (img2, vm2):
            assert not mac.allowed and mac.check == "mcs" and mac.audit(), access.what
        elif access.obj in (img1, s.shared):
            assert mac.allowed and mac.audit() is None, access.what
        else:
            assert not mac.allowed and mac.check == "te", access.what
    kinds = [a.perms for a in s.accesses if a.obj is img2]
    assert ("write",) in kinds and any("map" in k for k in kinds) and any("open" in k for k in kinds)


# --- the pictures (vmkit.viz.isolation) ---------------------------------------------------------------------
def test_the_svirt_diagram_says_in_words_what_dac_and_svirt_decide():
    """The picture's text form names each VM's process and image with their labels, and says that DAC
    allows VM 1 into VM 2's image and sVirt denies it."""
    from vmkit.viz.isolation import svirt_diagram
    s = scenario()
    text = svirt_diagram(s).text
    for process, image in s.vms:
        assert str(process.context) in text and image.path in text and str(image.context) in text
    assert "DAC allows it" in text and "sVirt denies it" in text


def test_the_access_walker_shows_each_access_and_its_audit_line():
    """The walker starts at the first access and moves through all of them; a denied access shows
    its audit record."""
    from vmkit.viz.isolation import access_walker
    s = scenario()
    box = access_walker(s)
    (back, forward, pick), panel = box.children[0].children, box.children[1]
    assert pick.value == 0 and "no audit record" in panel.value
    forward.click()
    forward.click()
    assert pick.value == 2 and "audit log" in panel.value and "denied" in panel.value
