"""The sandbox: untrusted code runs in a QEMU microVM or under gVisor, never in the gateway.

``image`` builds the guest (Debian cloud kernel + busybox initramfs), ``job`` is the request and
result as data (``jobspec`` the same on the standard library only), ``vm`` runs one VM per job,
``gvisor`` one runsc sandbox per job, ``backend`` picks KVM, gVisor or TCG by probing and proves
the guest kernel differs, ``broker``/``serve`` answer the profiles' sockets,
``jobclient``/``jobunit`` run each job, gVisor or microVM (``vmunit``), in a unit of its own
(prepared before its job), ``units`` keeps some of those units prepared ahead of requests
(``pool``: VMs booted ahead in this process, for the benchmark and the tests).
"""
