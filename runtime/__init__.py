"""The host runtime (untrusted) and, in ``runtime/guest/``, the measured guest code (trusted).

* ``runtime.vmm`` — the VMM on /dev/kvm (and the SNP launch on Linux's KVM SNP API);
* ``runtime.firmware`` — the firmware backends: the simulated PSP and the real one;
* ``runtime.run`` — the runner: build or reuse a keep, boot it, attest it live, run the app;
* ``runtime/guest/ukernel`` and ``runtime/guest/wasm`` — C, not Python: the microkernel and the
  in-guest WASM runtime and WASI layer, measured into the launch digest.

Host Python here builds on ``toolchain`` (the trusted core) and never imports the CLI (``keep``).
"""
