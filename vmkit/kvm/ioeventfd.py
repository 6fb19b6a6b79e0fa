"""KVM_IOEVENTFD for the virtio console's QueueNotify: the notification that does not leave the kernel.

Without it, the guest's write to QueueNotify is an MMIO exit: KVM_RUN returns to user space, the
device model takes the queue's requests, and the next KVM_RUN enters the guest again. With it
(Documentation/virt/kvm/api.rst, 4.59 KVM_IOEVENTFD: "This ioctl attaches or detaches an ioeventfd
to a legal pio/mmio address within the guest. A guest write in the registered address will signal
the provided event instead of triggering an exit"), KVM matches the write in the kernel, adds 1 to an
eventfd, and resumes the guest at once; a thread of the VMM's own, blocked on that eventfd, takes
the requests while the guest runs on. That is how QEMU runs virtio under KVM
(virtio_bus_set_host_notifier, with an iothread), and vhost goes one step further, the kernel's own
thread reading the rings.

`QueueNotifier` is that thread for vmkit's device model: the eventfd (os.eventfd), the ioctl with
KVM_IOEVENTFD_FLAG_DATAMATCH on the transmit queue's index (4-byte writes of 1 at VIRTIO_BASE +
0x050), and a worker that, for each read of the eventfd, services the queue under the device model's
lock. The device is then `deferred` (vmkit.machine.virtio): a notification only wakes the worker, and
while the worker is behind, VIRTIO_F_EVENT_IDX lets the driver skip notifications altogether. The
eventfd's counter says how many writes the kernel matched between two reads: `signals` adds them up.
"""
import os
import threading

from ..machine.virtio import OFFSET, TRANSMITQ, VIRTIO_BASE
from . import api

QUEUE_NOTIFY = VIRTIO_BASE + OFFSET["QueueNotify"]


def available(kvm):
    """Whether the KVM behind `kvm` (a vmkit.kvm.Kvm) offers KVM_IOEVENTFD (KVM_CAP_IOEVENTFD)."""
    return kvm.check_extension(api.KVM_CAP_IOEVENTFD) > 0


class QueueNotifier:
    """The eventfd on QueueNotify and the worker that services the queue when it is signalled."""

    def __init__(self, vm, devices):
        self.vm, self.devices = vm, devices
        self.signals = 0                       # guest writes the kernel matched
        self.wakeups = 0                       # reads of the eventfd: the worker's turns
        self._stopping = False
        self.fd = os.eventfd(0)
        try:
            vm.ioeventfd(QUEUE_NOTIFY, 4, self.fd, datamatch=TRANSMITQ)
        except OSError:
            os.close(self.fd)
            raise
        devices.virtio.deferred = True
        self._thread = threading.Thread(target=self._work, name="vmkit ioeventfd", daemon=True)
        self._thread.start()

    def _work(self):
        while True:
            count = os.eventfd_read(self.fd)
            if self._stopping:
                return
            with self.devices.lock:
                self.signals += count
                self.wakeups += 1
                self.devices.virtio.counts["notifies"] += count
                self.devices.virtio.service(TRANSMITQ)

    def close(self):
        """Stop the worker (after one last look at the queue) and detach the eventfd."""
        if self.fd is None:
            return
        with self.devices.lock:
            self.devices.virtio.service(TRANSMITQ)
        self._stopping = True
        os.eventfd_write(self.fd, 1)
        self._thread.join()
        try:
            self.vm.ioeventfd(QUEUE_NOTIFY, 4, self.fd, datamatch=TRANSMITQ, deassign=True)
        except OSError:
            pass                               # the VM is going away anyway
        os.close(self.fd)
        self.fd = None
