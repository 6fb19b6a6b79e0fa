"""The two ends of a migration: a VM that runs, pauses, shows its pages and hands over its state.

Both kinds offer the same operations, so the pre-copy loop (vmkit.migration.precopy) does not care
which it moves:

    run_for(seconds)        let the guest run (the model: seconds * MODEL_IPS instructions of its
                            virtual clock; KVM: real seconds), then leave it paused
    resume(seconds)         the same, said of a source whose migration was aborted
    start_dirty_log()       from now on, remember which pages the guest writes
    collect_dirty()         the pages written since the last call (get-and-clear)
    peek_dirty()            the same pages, left in the log (Xen's XEN_DOMCTL_SHADOW_OP_PEEK)
    stop_dirty_log()
    read_pages(pages)       {page: its 4 KiB}            write_pages({page: bytes})
    cpu_state()             the vCPU's registers, as bytes to send, and load_cpu_state(blob)
    device_state()          the devices' registers (not what COM1 has already sent), and load_device_state
    digest()                SHA-256 of all of RAM
    output                  what the guest has sent on COM1 so far
"""
import copy
import ctypes
import hashlib
import pickle

from ..asm import assemble
from ..errors import VmkitError
from ..kvm import api
from ..kvm.machine import KvmMachine
from ..kvm.vm import DEVICE
from ..machine.devices import CPU_HZ
from ..machine.machine import Machine
from .dirty_log import PAGE_SIZE, PagedMachine, WriteProtectLog

MODEL_IPS = CPU_HZ                 # the model's virtual CPU retires 10^8 instructions a second


class GuestEnded(VmkitError):
    """The guest stopped (exit, hlt, shutdown) while it was being migrated: a migration moves a
    guest that runs; use a workload that runs on."""


def _still_running(machine):
    if machine.finished:
        raise GuestEnded(f"the guest stopped while being migrated ({machine.result().summary()}); "
                         f"live migration moves a guest that keeps running")


def _device_state(devices):
    """Each device's registers, deep-copied; COM1's output is on the wire already and stays behind."""
    return {name: {k: copy.deepcopy(v) for k, v in vars(device).items() if k != "output" and not k.startswith("_")}
            for name, device in devices.items()}


def _load_device_state(devices, state):
    for name, values in state.items():
        vars(devices[name]).update(copy.deepcopy(values))


class ModelVm:
    """A guest on the emulated vmkit PC (counted, so every run is reproducible)."""
    where = "model"

    def __init__(self, image, *, tracked=False):
        self.image = assemble(image)
        self.machine = (PagedMachine if tracked else Machine)(self.image, max_instructions=None, timeout=None)
        self.log = WriteProtectLog(self.machine) if tracked else None
        self.pages = self.machine.memory // PAGE_SIZE

    @property
    def output(self):
        return bytes(self.machine.serial.output)

    @property
    def eip(self):
        return self.machine.cpu["eip"]

    def run_for(self, seconds):
        if seconds > 0:
            self.machine.run_until(instructions=max(1, round(seconds * MODEL_IPS)))
        _still_running(self.machine)

    resume = run_for

    def start_dirty_log(self):
        self.log.start()

    def collect_dirty(self):
        return self.log.collect()

    def peek_dirty(self):
        return frozenset(self.log.dirty)       # a dirty page stays writable until collect(): nothing to redo

    def stop_dirty_log(self):
        if self.log is not None:
            self.log.stop()

    def read_pages(self, pages):
        read = self.machine.uc.mem_read
        return {page: bytes(read(page * PAGE_SIZE, PAGE_SIZE)) for page in pages}

    def write_pages(self, contents):
        write = self.machine.uc.mem_write
        for page, data in contents.items():
            write(page * PAGE_SIZE, data)

    def memory(self):
        return bytes(self.machine.uc.mem_read(0, self.machine.memory))

    def digest(self):
        return hashlib.sha256(self.memory()).hexdigest()

    def registers(self):
        return self.machine.cpu.regs(("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags"))

    def cpu_state(self):
        """Unicorn's whole CPU context (registers, segment caches, control registers, FPU) and the
        virtual clock, which the destination's devices count on."""
        m = self.machine
        return pickle.dumps({"context": m.uc.context_save(), "clock": m.clock, "instructions": m.instructions})

    def load_cpu_state(self, blob):
        state = pickle.loads(blob)
        m = self.machine
        m.uc.context_restore(state["context"])
        m.clock, m.instructions = state["clock"], state["instructions"]

    def _devices(self):
        m = self.machine
        return {"serial": m.serial, "debug_exit": m.debug_exit, "pic": m.pic, "pit": m.pit}

    def device_state(self):
        return pickle.dumps(_device_state(self._devices()))

    def load_device_state(self, blob):
        _load_device_state(self._devices(), pickle.loads(blob))

    def close(self):
        self.stop_dirty_log()


class KvmVm:
    """A guest on the real KVM, with the dirty log KVM keeps (KVM_MEM_LOG_DIRTY_PAGES)."""
    where = "kvm"

    def __init__(self, image, *, tracked=False, path=None):
        self.image = assemble(image)
        self.machine = KvmMachine(self.image, timeout=None, path=path or DEVICE)
        self.pages = self.machine.memory // PAGE_SIZE
        self.logging = False
        self._peeked = set()               # read by peek_dirty(), not yet handed over by collect_dirty()

    @property
    def output(self):
        return bytes(self.machine.devices.serial.output)

    @property
    def eip(self):
        return self.machine.vcpus[0].get_regs().rip

    def run_for(self, seconds):
        if seconds > 0:
            self.machine.run_for(seconds)
        _still_running(self.machine)

    resume = run_for

    def start_dirty_log(self):
        self.machine.vm.log_dirty_pages(0, True)
        self.logging = True

    def collect_dirty(self):
        pages, self._peeked = sorted(self._peeked.union(self.machine.vm.dirty_pages(0))), set()
        return pages

    def peek_dirty(self):
        # KVM_GET_DIRTY_LOG always clears (without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): keep what it said
        self._peeked.update(self.machine.vm.dirty_pages(0))
        return frozenset(self._peeked)

    def stop_dirty_log(self):
        if self.logging:
            self.machine.vm.log_dirty_pages(0, False)
            self.logging = False

    def read_pages(self, pages):
        ram = self.machine.ram
        return {page: ram[page * PAGE_SIZE:(page + 1) * PAGE_SIZE] for page in pages}

    def write_pages(self, contents):
        ram = self.machine.ram
        for page, data in contents.items():
            ram[page * PAGE_SIZE:(page + 1) * PAGE_SIZE] = data

    def memory(self):
        return self.machine.ram[:self.machine.memory]

    def digest(self):
        return hashlib.sha256(self.memory()).hexdigest()

    def registers(self):
        return {k: v for k, v in self.machine.registers().items() if k not in ("cs", "ss", "ds", "es", "fs", "gs")}

    def cpu_state(self):
        """KVM_GET_REGS and KVM_GET_SREGS, as the bytes of their structures."""
        vcpu = self.machine.vcpus[0]
        return bytes(vcpu.get_regs()) + bytes(vcpu.get_sregs())

    def load_cpu_state(self, blob):
        vcpu, size = self.machine.vcpus[0], ctypes.sizeof(api.kvm_regs)
        vcpu.set_sregs(api.kvm_sregs.from_buffer_copy(blob[size:]))
        vcpu.set_regs(api.kvm_regs.from_buffer_copy(blob[:size]))

    def _devices(self):
        d = self.machine.devices
        return {"serial": d.serial, "debug_exit": d.debug_exit, "pic": d.pic, "pit": d.pit, "mmio": d.mmio}

    def device_state(self):
        return pickle.dumps(_device_state(self._devices()))

    def load_device_state(self, blob):
        _load_device_state(self._devices(), pickle.loads(blob))

    def close(self):
        self.machine.close()


def make_vm(image, where="model", *, tracked=False):
    if where == "model":
        return ModelVm(image, tracked=tracked)
    if where == "kvm":
        return KvmVm(image, tracked=tracked)
    raise VmkitError(f"a migration runs on 'model' (the emulated vmkit PC) or 'kvm' (the real KVM), not {where!r}")
