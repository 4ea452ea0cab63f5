"""The Keepstack VMM: runs a keep on /dev/kvm and serves its hypercalls (untrusted by design)."""
