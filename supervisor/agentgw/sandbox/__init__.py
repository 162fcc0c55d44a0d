"""The microVM sandbox: untrusted code runs in a QEMU microVM, never in the gateway.

``image`` builds the guest (Debian cloud kernel + busybox initramfs), ``job`` is the request and
result as data, ``vm`` runs one VM per job, ``backend`` picks KVM or TCG by booting and proves the
guest kernel differs, ``pool`` keeps VMs booted ahead of requests.
"""
