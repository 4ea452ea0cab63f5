"""The ctypes mirror of the KVM SEV-SNP API against what Linux 6.12.117's headers compile to.

``tests/data/kvm-snp-uapi/offsets-6.12.117.txt`` is the output of a C program compiled against
Debian's linux-libc-dev 6.12.117-1; this file parses it and compares every structure size,
every field offset and size, the ``kvm_run`` exit fields, every ioctl number and every constant.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from testdata import KVM_SNP_OFFSETS

from runtime.vmm import kvm_abi, kvm_snp

STRUCTS: dict[str, type[ctypes.Structure]] = {
    "kvm_sev_cmd": kvm_snp.KvmSevCmd,
    "kvm_sev_init": kvm_snp.KvmSevInit,
    "kvm_sev_snp_launch_start": kvm_snp.KvmSevSnpLaunchStart,
    "kvm_sev_snp_launch_update": kvm_snp.KvmSevSnpLaunchUpdate,
    "kvm_sev_snp_launch_finish": kvm_snp.KvmSevSnpLaunchFinish,
    "kvm_create_guest_memfd": kvm_snp.KvmCreateGuestMemfd,
    "kvm_userspace_memory_region2": kvm_snp.KvmUserspaceMemoryRegion2,
    "kvm_memory_attributes": kvm_snp.KvmMemoryAttributes,
}
IOCTLS = {
    "KVM_MEMORY_ENCRYPT_OP": kvm_snp.KVM_MEMORY_ENCRYPT_OP,
    "KVM_SET_USER_MEMORY_REGION2": kvm_snp.KVM_SET_USER_MEMORY_REGION2,
    "KVM_SET_MEMORY_ATTRIBUTES": kvm_snp.KVM_SET_MEMORY_ATTRIBUTES,
    "KVM_CREATE_GUEST_MEMFD": kvm_snp.KVM_CREATE_GUEST_MEMFD,
    "KVM_CHECK_EXTENSION": kvm_abi.KVM_CHECK_EXTENSION,
    "KVM_ENABLE_CAP": kvm_snp.KVM_ENABLE_CAP,
    "KVM_GET_DEVICE_ATTR": kvm_snp.KVM_GET_DEVICE_ATTR,
}
CONSTS = {
    "KVM_X86_SNP_VM": kvm_abi.KVM_X86_SNP_VM,
    "KVM_SEV_INIT2": kvm_snp.KVM_SEV_INIT2,
    "SNP_LAUNCH_START": kvm_snp.KVM_SEV_SNP_LAUNCH_START,
    "UPDATE": kvm_snp.KVM_SEV_SNP_LAUNCH_UPDATE,
    "FINISH": kvm_snp.KVM_SEV_SNP_LAUNCH_FINISH,
    "KVM_EXIT_HYPERCALL": kvm_abi.KVM_EXIT_HYPERCALL,
    "KVM_EXIT_MEMORY_FAULT": kvm_abi.KVM_EXIT_MEMORY_FAULT,
    "KVM_CAP_EXIT_HYPERCALL": kvm_snp.KVM_CAP_EXIT_HYPERCALL,
    "KVM_CAP_GUEST_MEMFD": kvm_snp.KVM_CAP_GUEST_MEMFD,
    "KVM_CAP_MEMORY_ATTRIBUTES": kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES,
    "KVM_CAP_VM_TYPES": kvm_abi.KVM_CAP_VM_TYPES,
    "KVM_HC_MAP_GPA_RANGE": kvm_snp.KVM_HC_MAP_GPA_RANGE,
}

_STRUCT = re.compile(r"^struct (\w+): sizeof (\d+)$")
_FIELD = re.compile(r"^  (\w+) +off +(\d+) size +(\d+)$")


@cache
def headers() -> dict[str, object]:
    """The offsets file as {struct: (size, {field: (offset, size)})}, 'kvm_run', 'ioctls', ..."""
    structs: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
    parsed: dict[str, object] = {"structs": structs}
    current: dict[str, tuple[int, int]] | None = None
    for line in KVM_SNP_OFFSETS.read_text(encoding="ascii").splitlines():
        if match := _STRUCT.match(line):
            current = {}
            structs[match[1]] = (int(match[2]), current)
        elif match := _FIELD.match(line):
            assert current is not None, line
            current[match[1]] = (int(match[2]), int(match[3]))
        elif line.startswith("kvm_run:"):
            # "exit_reason off 8; union off 32; hypercall.nr 32 args 40 ..."
            pairs = re.findall(r"([\w.()]+) (\d+)", line.replace(" off ", " "))
            parsed["kvm_run"] = {key: int(value) for key, value in pairs}
        elif line.startswith(("ioctls:", "consts:")):
            kind, rest = line.split(":", 1)
            words = rest.split()
            parsed[kind] = {words[i]: int(words[i + 1], 0) for i in range(0, len(words), 2)}
        else:
            raise AssertionError(f"unparsed line in the offsets file: {line!r}")
    return parsed


def test_the_offsets_file_covers_everything_mirrored_here() -> None:
    parsed = headers()
    assert sorted(parsed["structs"]) == sorted(STRUCTS)  # type: ignore[call-overload]
    assert sorted(parsed["ioctls"]) == sorted(IOCTLS)  # type: ignore[call-overload]
    assert sorted(parsed["consts"]) == sorted(CONSTS)  # type: ignore[call-overload]


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_structure_layout(name: str) -> None:
    size, expected = headers()["structs"][name]  # type: ignore[index]
    struct = STRUCTS[name]
    assert ctypes.sizeof(struct) == size
    found = {
        field: (getattr(struct, field).offset, getattr(struct, field).size)
        for field, *_ in struct._fields_
    }
    assert found == expected


def test_kvm_run_exit_fields() -> None:
    run = headers()["kvm_run"]
    union = kvm_abi.KvmRun.exit.offset
    hypercall, fault = kvm_abi.KvmRunHypercall, kvm_abi.KvmRunMemoryFault
    assert run == {  # the names as the C program printed them
        "exit_reason": kvm_abi.KvmRun.exit_reason.offset,
        "union": union,
        "hypercall.nr": union + hypercall.nr.offset,
        "args": union + hypercall.args.offset,
        "ret": union + hypercall.ret.offset,
        "flags": union + hypercall.flags.offset,
        "memory_fault.flags": union + fault.flags.offset,
        "gpa": union + fault.gpa.offset,
        "size": union + fault.size.offset,
        "sizeof(kvm_run)": ctypes.sizeof(kvm_abi.KvmRun),
    }
    assert kvm_abi.KvmRunExit.hypercall.offset == 0
    assert kvm_abi.KvmRunExit.memory_fault.offset == 0


@pytest.mark.parametrize("name", sorted(IOCTLS))
def test_ioctl_number(name: str) -> None:
    assert IOCTLS[name] == headers()["ioctls"][name]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(CONSTS))
def test_constant(name: str) -> None:
    assert CONSTS[name] == headers()["consts"][name]  # type: ignore[index]


def test_exit_reason_names_know_the_snp_exits() -> None:
    assert kvm_abi.EXIT_REASON_NAMES[kvm_abi.KVM_EXIT_MEMORY_FAULT] == "MEMORY_FAULT"
    assert kvm_abi.EXIT_REASON_NAMES[kvm_abi.KVM_EXIT_HYPERCALL] == "HYPERCALL"


def test_sev_device_status_layout() -> None:
    """Not in the offsets file: psp-sev.h's sizes by hand (both structures are ``__packed``:
    u32 cmd, u64 data, u32 error; the status as the SNP ABI's SNP_PLATFORM_STATUS buffer)."""
    assert ctypes.sizeof(kvm_snp.SevIssueCmd) == 16
    assert (kvm_snp.SevIssueCmd.data.offset, kvm_snp.SevIssueCmd.error.offset) == (4, 12)
    status = kvm_snp.SevUserDataSnpStatus
    assert ctypes.sizeof(status) == 32
    assert (status.build_id.offset, status.guest_count.offset) == (4, 12)
    assert (status.current_tcb_version.offset, status.reported_tcb_version.offset) == (16, 24)
    # _IOWR('S', 0x0, struct sev_issue_cmd)
    assert kvm_snp.SEV_ISSUE_CMD == 0xC0105300


_SEV_PROBE = """
#include <sys/ioctl.h>
#include <linux/psp-sev.h>
#include <stdio.h>
#include <stddef.h>
int main(void) {
  printf("%zu %zu %zu %lu\\n", sizeof(struct sev_issue_cmd), offsetof(struct sev_issue_cmd, data),
         offsetof(struct sev_issue_cmd, error), (unsigned long)SEV_ISSUE_CMD);
  return 0;
}
"""


def test_sev_issue_cmd_against_installed_headers(tmp_path: Path) -> None:
    """Where a C compiler and psp-sev.h exist (any version has SEV_ISSUE_CMD), compare."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not Path("/usr/include/linux/psp-sev.h").is_file():
        pytest.skip("no C compiler or /usr/include/linux/psp-sev.h: the hand values above apply")
    source, binary = tmp_path / "probe.c", tmp_path / "probe"
    source.write_text(_SEV_PROBE)
    subprocess.run([compiler, str(source), "-o", str(binary)], check=True, capture_output=True)
    found = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    assert list(map(int, found.split())) == [
        ctypes.sizeof(kvm_snp.SevIssueCmd),
        kvm_snp.SevIssueCmd.data.offset,
        kvm_snp.SevIssueCmd.error.offset,
        kvm_snp.SEV_ISSUE_CMD,
    ]
