"""sVirt in miniature: SELinux type enforcement with MCS categories, the way libvirt isolates VMs.

Every KVM virtual machine is a QEMU process, and every VM runs as the same Unix user (`qemu`), so
Unix permissions (DAC) cannot tell one VM's disk image from another's. sVirt adds mandatory access
control (MAC): libvirt gives each VM's process and each of its images the same SELinux label with
a pair of MCS categories of its own,

    process  system_u:system_r:svirt_t:s0:c12,c34
    image    system_u:object_r:svirt_image_t:s0:c12,c34

and the kernel lets a process touch a file only if (1) a type-enforcement allow rule grants the
permission for (source type, target type, class) and (2) every MCS constraint on that permission
holds, here: the process's level dominates the file's level.

    ctx = Context.parse("system_u:system_r:svirt_t:s0:c12,c34")
    POLICY.decide(ctx, image_ctx, "file", ["read", "write"])    # a Decision that explains itself
    McsAllocator(seed=1).allocate()                             # Level s0:cA,cB, as libvirt picks
    scenario()                                                  # two VMs, one uid: DAC vs sVirt

The policy is a small, faithful extract of what Fedora/RHEL's targeted MCS policy says about
these types (policy/mcs in selinux-policy, virt.te); it is not the whole policy.
"""
import random
from dataclasses import dataclass, field

# --- levels, ranges, contexts -----------------------------------------------------------------------
CATEGORIES = 1024                                   # the targeted policy defines c0..c1023


@dataclass(frozen=True)
class Level:
    """A sensitivity and a set of categories: `s0:c12,c34`. MCS uses only the sensitivity s0."""
    sensitivity: int = 0
    categories: frozenset = frozenset()

    @classmethod
    def parse(cls, text):
        sens, _, cats = text.strip().partition(":")
        if not sens.startswith("s") or not sens[1:].isdigit():
            raise ValueError(f"not a sensitivity: {sens!r} in {text!r}")
        categories = set()
        for part in filter(None, cats.split(",")):
            low, dot, high = part.partition(".")    # c0.c1023 is every category from c0 to c1023
            first, last = _category(low, text), _category(high, text) if dot else None
            if last is not None and last < first:
                raise ValueError(f"category range {part!r} runs backwards in {text!r}")
            categories.update(range(first, (last if last is not None else first) + 1))
        return cls(int(sens[1:]), frozenset(categories))

    def dominates(self, other):
        """MLS/MCS dominance: at least as sensitive and holding every category the other holds."""
        return self.sensitivity >= other.sensitivity and self.categories >= other.categories

    def __str__(self):
        # printed the way the kernel prints it (mls_sid_to_context): runs of three or more
        # consecutive categories as cA.cB, everything else comma-separated
        parts, cats = [], sorted(self.categories)
        i = 0
        while i < len(cats):
            j = i
            while j + 1 < len(cats) and cats[j + 1] == cats[j] + 1:
                j += 1
            if j - i >= 2:
                parts.append(f"c{cats[i]}.c{cats[j]}")
            else:
                parts.extend(f"c{c}" for c in cats[i:j + 1])
            i = j + 1
        return f"s{self.sensitivity}" + (":" + ",".join(parts) if parts else "")


def _category(text, whole):
    if not text.startswith("c") or not text[1:].isdigit() or int(text[1:]) >= CATEGORIES:
        raise ValueError(f"not a category: {text!r} in {whole!r}")
    return int(text[1:])


@dataclass(frozen=True)
class MlsRange:
    """low-high, e.g. `s0-s0:c0.c1023` for libvirtd; a single level when low == high."""
    low: Level
    high: Level

    @classmethod
    def parse(cls, text):
        low, dash, high = text.partition("-")
        low = Level.parse(low)
        high = Level.parse(high) if dash else low
        if not high.dominates(low):
            raise ValueError(f"the high level of {text!r} does not dominate its low level")
        return cls(low, high)

    def __str__(self):
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Context:
    """A security context `user:role:type:range`."""
    user: str
    role: str
    type: str
    range: MlsRange

    @classmethod
    def parse(cls, text):
        parts = text.strip().split(":", 3)          # the range itself holds colons
        if len(parts) != 4 or not all(parts):
            raise ValueError(f"a context is user:role:type:level, got {text!r}")
        return cls(parts[0], parts[1], parts[2], MlsRange.parse(parts[3]))

    @property
    def low(self):
        return self.range.low

    @property
    def high(self):
        return self.range.high

    def with_level(self, level):
        level = Level.parse(level) if isinstance(level, str) else level
        return Context(self.user, self.role, self.type, MlsRange(level, level))

    def __str__(self):
        return f"{self.user}:{self.role}:{self.type}:{self.range}"


def context(value):
    return value if isinstance(value, Context) else Context.parse(value)


# --- the policy -------------------------------------------------------------------------------------
# Permissions in the kernel's order for each class (security/selinux/include/classmap.h): an AVC
# message lists the denied ones in this order.
PERMISSIONS = {
    "file": ("ioctl", "read", "write", "create", "getattr", "setattr", "lock", "relabelfrom",
             "relabelto", "append", "map", "unlink", "link", "rename", "execute", "open",
             "execute_no_trans", "entrypoint"),
    "process": ("fork", "transition", "sigchld", "sigkill", "sigstop", "signull", "signal", "ptrace",
                "getsched", "setsched", "getattr", "dyntransition", "setcurrent"),
}


@dataclass(frozen=True)
class AllowRule:
    """`allow source target:class { perms };`"""
    source: str
    target: str
    tclass: str
    perms: frozenset

    def __str__(self):
        return f"allow {self.source} {self.target}:{self.tclass} {{ {' '.join(_ordered(self.tclass, self.perms))} }};"


@dataclass(frozen=True)
class Constraint:
    """An `mlsconstrain` statement of the MCS policy, limited to the expressions MCS uses:
    `h1 dom h2` (the subject's high level dominates the object's), optionally `and l2 eq h2` (the
    object is a single level), for subjects of the types in `applies_to` (None: every subject)."""
    tclass: str
    perms: frozenset
    single_level_object: bool = False
    applies_to: frozenset = None

    def holds(self, source, target):
        if self.applies_to is not None and source.type not in self.applies_to:
            return True                             # ( t1 != mcs_constrained_type ) is true
        if not source.high.dominates(target.high):
            return False
        return not self.single_level_object or target.low == target.high

    def failure(self, source, target):
        """Why it does not hold, in words."""
        if not source.high.dominates(target.high):
            s, t = source.high, target.high
            if s.sensitivity < t.sensitivity:
                return f"s{s.sensitivity} is below s{t.sensitivity}"
            missing = Level(t.sensitivity, t.categories - s.categories)
            return (f"the subject's level {s} does not dominate the object's level {t} "
                    f"(the subject lacks {str(missing).partition(':')[2]})")
        return f"the object's range {target.range} is not a single level (l2 eq h2 fails)"

    def __str__(self):
        expr = "( h1 dom h2 )"
        if self.single_level_object:
            expr = f"( {expr} and ( l2 eq h2 ) )"
        if self.applies_to is not None:
            expr = f"( {expr} or ( t1 != mcs_constrained_type ) )"
        return f"mlsconstrain {self.tclass} {{ {' '.join(_ordered(self.tclass, self.perms))} }} {expr};"


def _ordered(tclass, perms):
    order = PERMISSIONS.get(tclass, ())
    return sorted(perms, key=lambda p: (order.index(p) if p in order else len(order), p))


def _rule(source, target, tclass, perms):
    return AllowRule(source, target, tclass, frozenset(perms.split()))


# The domains whose categories MCS enforces: in Fedora's policy the attribute mcs_constrained_type
# (svirt_t is in it, like container_t); unconfined and management domains are not.
MCS_CONSTRAINED_TYPES = frozenset({"svirt_t"})

ALLOW_RULES = (
    # a VM's QEMU on its own disk images (virt.te: manage_files_pattern on svirt_image_t, plus map)
    _rule("svirt_t", "svirt_image_t", "file", "ioctl read write getattr lock append map open"),
    # read-only, shared content (installation ISOs): labelled virt_content_t at s0, readable by all VMs
    _rule("svirt_t", "virt_content_t", "file", "ioctl read getattr lock map open"),
    # QEMU's own threads and helpers; `self` means "the same type", so it covers other VMs' processes too
    _rule("svirt_t", "svirt_t", "process", "fork sigchld signal signull getsched setsched"),
    # libvirtd (virtd_t, range s0-s0:c0.c1023) labels images and starts, signals and kills VMs
    _rule("virtd_t", "svirt_image_t", "file", "ioctl read write create getattr setattr lock relabelfrom "
          "relabelto append unlink open"),
    _rule("virtd_t", "virt_image_t", "file", "ioctl read write getattr setattr lock relabelfrom relabelto open"),
    _rule("virtd_t", "virt_content_t", "file", "read getattr relabelfrom relabelto open"),
    _rule("virtd_t", "svirt_t", "process", "transition sigkill sigstop signull signal getattr getsched"),
    # an administrator's shell: unconfined, all categories
    _rule("unconfined_t", "svirt_image_t", "file", "ioctl read write getattr setattr lock append map open"),
    _rule("unconfined_t", "user_home_t", "file", "ioctl read write create getattr setattr lock append map "
          "unlink open"),
    _rule("unconfined_t", "svirt_t", "process", "sigkill sigstop signull signal ptrace getattr"),
)

_FILE_READ = frozenset("ioctl read lock execute execute_no_trans".split())
_FILE_WRITE = frozenset("write setattr append unlink link rename".split())
MCS_CONSTRAINTS = (
    # policy/mcs: the file constraints that keep one VM's QEMU out of another VM's image
    Constraint("file", _FILE_READ, applies_to=MCS_CONSTRAINED_TYPES),
    Constraint("file", _FILE_WRITE, applies_to=MCS_CONSTRAINED_TYPES),
    # a new or relabelled file gets one level that its creator dominates, for every subject
    Constraint("file", frozenset({"create", "relabelto"}), single_level_object=True),
    # one VM may not signal, stop, kill or trace another
    Constraint("process", frozenset({"sigkill", "sigstop", "signal"}), applies_to=MCS_CONSTRAINED_TYPES),
    Constraint("process", frozenset({"ptrace"}), applies_to=MCS_CONSTRAINED_TYPES),
    Constraint("process", frozenset({"transition", "dyntransition"})),
)


@dataclass
class Decision:
    """The answer to one access: per permission "allowed", "te" (no allow rule grants it) or
    "mcs" (an allow rule grants it, an MCS constraint refuses it), with the rules behind it."""
    source: Context
    target: Context
    tclass: str
    perms: tuple
    verdicts: dict
    rule: AllowRule = None                          # the allow rule that matched, if any
    failed: list = field(default_factory=list)      # the constraints that did not hold
    enforcing: bool = True
    subject: "Process" = None
    obj: object = None                              # a File or a Process, for the audit line

    @property
    def denied(self):
        return tuple(p for p in _ordered(self.tclass, self.perms) if self.verdicts[p] != "allowed")

    @property
    def allowed(self):
        """Did the access go through? In permissive mode denials are logged, not enforced."""
        return not self.denied or not self.enforcing

    @property
    def check(self):
        """Which check denied: "te", "mcs", or None when nothing was denied."""
        kinds = {self.verdicts[p] for p in self.denied}
        return "te" if "te" in kinds else "mcs" if kinds else None

    def explain(self):
        wanted = " ".join(_ordered(self.tclass, self.perms))
        head = f"{self.source.type} -> {self.target.type}:{self.tclass} {{ {wanted} }}: "
        if not self.denied:
            lines = [head + "allowed", f"  type enforcement: {self.rule}"]
            checked = [c for c in MCS_CONSTRAINTS if c.tclass == self.tclass and c.perms & set(self.perms)]
            if any(c.applies_to is None or self.source.type in c.applies_to for c in checked):
                lines.append(f"  MCS: {self.source.high} dominates {self.target.high}")
            elif checked:
                lines.append(f"  MCS: {self.source.type} is not an mcs_constrained_type, so the "
                             "category check does not apply")
            return "\n".join(lines)
        lines = [head + ("denied" if self.enforcing else "denied, but permissive: logged and allowed")]
        te = [p for p in self.denied if self.verdicts[p] == "te"]
        if te:
            lines.append(f"  type enforcement: no allow rule grants {self.source.type} -> "
                         f"{self.target.type}:{self.tclass} {{ {' '.join(te)} }}")
        for constraint in self.failed:
            refused = " ".join(p for p in self.denied if p in constraint.perms and self.verdicts[p] == "mcs")
            lines.append(f"  MCS constraint on {{ {refused} }}: {constraint.failure(self.source, self.target)}")
            lines.append(f"    {constraint}")
        if self.rule and any(self.verdicts[p] == "mcs" for p in self.denied):
            lines.append(f"  (type enforcement alone would allow it: {self.rule})")
        return "\n".join(lines)

    def audit(self):
        """The kernel's AVC message for a denial (None when nothing was denied)."""
        if not self.denied:
            return None
        who = ""
        if self.subject is not None:
            who = f' pid={self.subject.pid} comm="{self.subject.comm}"'
        what = ""
        if isinstance(self.obj, File):
            what = f' name="{self.obj.name}" dev="{self.obj.dev}" ino={self.obj.ino}'
        return (f"avc:  denied  {{ {' '.join(self.denied)} }} for {who}{what} scontext={self.source} "
                f"tcontext={self.target} tclass={self.tclass} permissive={0 if self.enforcing else 1}")

    def __str__(self):
        return self.explain()


class Policy:
    """Allow rules and MCS constraints, and the kernel's decision for an access."""

    def __init__(self, rules=ALLOW_RULES, constraints=MCS_CONSTRAINTS, enforcing=True):
        self.rules, self.constraints, self.enforcing = tuple(rules), tuple(constraints), enforcing
        self._table = {(r.source, r.target, r.tclass): r for r in self.rules}

    def rule_for(self, source_type, target_type, tclass):
        return self._table.get((source_type, target_type, tclass))

    def decide(self, source, target, tclass, perms, subject=None, obj=None):
        """Type enforcement first, then the constraints on what it allowed, as the security server
        computes an access vector (context_struct_compute_av): allowed = TE rules minus what a
        constraint refuses."""
        source, target = context(source), context(target)
        perms = tuple(dict.fromkeys([perms] if isinstance(perms, str) else perms))
        rule = self.rule_for(source.type, target.type, tclass)
        verdicts = {p: "allowed" if rule and p in rule.perms else "te" for p in perms}
        failed = []
        for constraint in self.constraints:
            hit = [p for p in perms if constraint.tclass == tclass and p in constraint.perms and verdicts[p] == "allowed"]
            if hit and not constraint.holds(source, target):
                failed.append(constraint)
                verdicts.update((p, "mcs") for p in hit)
        return Decision(source, target, tclass, perms, verdicts, rule, failed, self.enforcing, subject, obj)


POLICY = Policy()


# --- libvirt's category allocator -------------------------------------------------------------------
class McsAllocator:
    """Unique category pairs, the way libvirt's SELinux driver picks them (virSecuritySELinuxMCSFind):
    draw two random categories in libvirtd's own range; if they are equal draw again (a VM with the
    single category {c5} would be dominated by a VM holding {c5, c9}); order them; if that pair is
    in use draw again."""

    def __init__(self, seed=None, first=0, last=CATEGORIES - 1, sensitivity=0):
        self.rng = random.Random(seed)
        self.first, self.last, self.sensitivity = first, last, sensitivity
        self.in_use = set()

    @property
    def capacity(self):
        n = self.last - self.first + 1
        return n * (n - 1) // 2

    def allocate(self):
        if len(self.in_use) >= self.capacity:
            raise RuntimeError(f"every category pair in c{self.first}..c{self.last} is in use")
        span = self.last - self.first + 1
        while True:
            c1, c2 = self.rng.randrange(span), self.rng.randrange(span)
            if c1 == c2:
                continue
            level = Level(self.sensitivity, frozenset({self.first + c1, self.first + c2}))
            if level not in self.in_use:
                self.in_use.add(level)
                return level

    def reserve(self, level):
        """Mark a pair as used (a VM that was already running when libvirtd started)."""
        self.in_use.add(Level.parse(level) if isinstance(level, str) else level)

    def release(self, level):
        self.in_use.discard(Level.parse(level) if isinstance(level, str) else level)


# --- processes, files, Unix permissions ---------------------------------------------------------------
@dataclass
class Process:
    pid: int
    comm: str
    uid: int
    gid: int
    context: Context
    user: str = ""

    def __post_init__(self):
        self.context = context(self.context)


@dataclass
class File:
    path: str
    owner: int
    group: int
    mode: int
    context: Context
    dev: str = "dm-0"
    ino: int = 0

    def __post_init__(self):
        self.context = context(self.context)

    @property
    def name(self):
        return self.path.rsplit("/", 1)[-1]


# Which mode bit each file permission needs from DAC; the others (open, getattr, map, lock) need
# none beyond what the file was opened with.
DAC_BITS = {"read": "r", "write": "w", "append": "w", "execute": "x"}


@dataclass
class DacDecision:
    allowed: bool
    reason: str

    def __str__(self):
        return f"DAC: {'allowed' if self.allowed else 'denied'}: {self.reason}"


def dac_check(process, obj, perms):
    """Unix discretionary access control: the owner's, the group's or everyone's mode bits, chosen
    by who the process is; root passes (CAP_DAC_OVERRIDE). For a signal, the sender's uid must be
    the target's (or root's)."""
    perms = [perms] if isinstance(perms, str) else list(perms)
    if isinstance(obj, Process):
        if process.uid == 0 or process.uid == obj.uid:
            return DacDecision(True, f"uid {process.uid} may signal its own processes (target uid {obj.uid})")
        return DacDecision(False, f"uid {process.uid} may not signal uid {obj.uid}'s processes")
    needed = "".join(sorted({DAC_BITS[p] for p in perms if p in DAC_BITS}, key="rwx".index))
    if process.uid == 0 and "x" not in needed:
        return DacDecision(True, "root (CAP_DAC_OVERRIDE)")
    if process.uid == obj.owner:
        who, bits = "is the file's owner", (obj.mode >> 6) & 7
    elif process.gid == obj.group:
        who, bits = "is in the file's group", (obj.mode >> 3) & 7
    else:
        who, bits = "is neither owner nor group (others)", obj.mode & 7
    have = "".join(c if bits & b else "-" for c, b in zip("rwx", (4, 2, 1)))
    ok = all(bits & {"r": 4, "w": 2, "x": 1}[c] for c in needed)
    return DacDecision(ok, f"uid {process.uid} {who}: mode {obj.mode:04o} gives it {have}, "
                           f"it needs {needed or 'no bits'}")


# --- two VMs under one uid ------------------------------------------------------------------------------
QEMU_UID = QEMU_GID = 107                           # the qemu user and group of Fedora/RHEL


@dataclass
class Access:
    """One thing a process tries, and the permissions the kernel checks for it."""
    what: str
    process: Process
    obj: object
    tclass: str
    perms: tuple

    @property
    def name(self):
        return self.obj.path if isinstance(self.obj, File) else f"pid {self.obj.pid} ({self.obj.comm})"

    def dac(self):
        return dac_check(self.process, self.obj, self.perms)

    def svirt(self, policy=None):
        return (policy or POLICY).decide(self.process.context, self.obj.context, self.tclass, self.perms,
                                         subject=self.process, obj=self.obj)


@dataclass
class Scenario:
    vms: list                                       # [(Process, File)], one per VM
    shared: File                                    # a read-only ISO every VM may read
    home: File                                      # a user's file, readable by everyone under DAC
    accesses: list


def scenario(seed=2009):
    """Two VMs started by libvirt as the same Unix user, qemu. VM 1's QEMU has been taken over by
    its guest (a VM escape into the QEMU process) and goes after VM 2."""
    allocator = McsAllocator(seed)
    vms = []
    for n, pid in ((1, 4242), (2, 4243)):
        level = allocator.allocate()
        process = Process(pid, "qemu-kvm", QEMU_UID, QEMU_GID, Context("system_u", "system_r", "svirt_t",
                          MlsRange(level, level)), user="qemu")
        # libvirt chowns the image to qemu:qemu and labels it with the VM's own categories
        image = File(f"/var/lib/libvirt/images/vm{n}.img", QEMU_UID, QEMU_GID, 0o600,
                     Context("system_u", "object_r", "svirt_image_t", MlsRange(level, level)), ino=1834 + n)
        vms.append((process, image))
    shared = File("/var/lib/libvirt/images/fedora.iso", 0, 0, 0o644,
                  "system_u:object_r:virt_content_t:s0", ino=1801)
    home = File("/home/alice/notes.txt", 1000, 1000, 0o644, "unconfined_u:object_r:user_home_t:s0", ino=5120)
    (vm1, img1), (vm2, img2) = vms
    accesses = [
        Access("VM 1 opens its own image for reading and writing", vm1, img1, "file", ("open", "read", "write")),
        Access("VM 1 reads the shared installation ISO", vm1, shared, "file", ("open", "read")),
        Access("VM 1 opens VM 2's image for reading and writing", vm1, img2, "file", ("open", "read", "write")),
        Access("VM 1 writes into VM 2's image", vm1, img2, "file", ("write",)),
        Access("VM 1 maps VM 2's image into its memory, shared and writable", vm1, img2, "file",
               ("map", "read", "write")),
        Access("VM 1 sends VM 2's QEMU a SIGTERM", vm1, vm2, "process", ("signal",)),
        Access("VM 1 reads a user's file in /home", vm1, home, "file", ("open", "read")),
    ]
    return Scenario(vms, shared, home, accesses)
