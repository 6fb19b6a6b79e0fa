"""Lab 5 (a KVM VMM's run loop): guests on vmkit's hardware-assist model with the model's own devices,
and vmkit's device model answering scripted accesses."""
import vmkit
from vmkit.grading.lab5 import MMIO_REGISTERS
from vmkit.kvm.devices import DeviceModel
from vmkit.kvm.userspace import UserExit, exit_record
from vmkit.vtx.hardware_assist import KERNEL_HANDLED


def user_space_run(source):
    """The guest on vmkit's hardware-assist model with the model's own devices, as loop_facts: the exits
    are the model's vmexit events that reach user space (KVM answers CPUID inside the kernel)."""
    machine = vmkit.machine(source, "hardware-assist", timeout=30)
    result = machine.run()
    ended = "exit" if result.exit_code is not None else "shutdown" if result.shutdown else "halted"
    exits = [exit_record(UserExit(e.detail["reason"], e.detail)) for e in result.of_kind("vmexit")
             if e.detail["reason"] not in KERNEL_HANDLED]
    return {"ended": ended, "serial": result.serial_bytes.decode("latin-1"), "exit_code": result.exit_code,
            "mmio": {name: getattr(machine.mmio, name) for name in MMIO_REGISTERS}, "exits": exits}


def user_space_runs(sources):
    """user_space_run for each guest, in one process."""
    return [user_space_run(source) for source in sources]


def device_answers(script):
    """vmkit's device model taking each access of `script` ([reason, port or address, size, direction,
    value]) in order: {"answers": each read's value (None for a write), "serial", "exit_code", "mmio"}."""
    devices = DeviceModel()
    answers = [(devices.port_access if reason == "IO" else devices.mmio_access)(where, size, value, direction)
               for reason, where, size, direction, value in script]
    return {"answers": answers, "serial": bytes(devices.serial.output).decode("latin-1"),
            "exit_code": devices.debug_exit.exit_code,
            "mmio": {name: getattr(devices.mmio, name) for name in MMIO_REGISTERS}}


FACTS = {f.__name__: f for f in (user_space_runs, device_answers)}
