"""The sandbox: untrusted code runs in a QEMU microVM or under gVisor, never in the gateway.

``image`` builds the guest (Debian cloud kernel + busybox initramfs), ``job`` is the request and
result as data (``jobspec`` the same on the standard library only), ``vm`` runs one VM per job,
``gvisor`` one runsc sandbox per job, ``backend`` picks KVM, gVisor or TCG by probing and proves
the guest kernel differs, ``pool`` keeps VMs booted ahead of requests (the benchmark's; the
broker's is not wired to job units yet), ``broker``/``serve`` answer the profiles' sockets,
``jobclient``/``jobunit`` run each job in a unit of its own (``vmunit``: a microVM's there).
"""
