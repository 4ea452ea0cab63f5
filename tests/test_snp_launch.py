"""The `snp` backend's host side, at the ioctl boundary (a fake KVM) and for real where it can.

The fake (``runtime.vmm.fake_kvm_snp``) checks call order and arguments as KVM 6.12 would and
computes the firmware's launch digest from the bytes it reads at each LAUNCH_UPDATE's uaddr; the
driver's own expected digest must equal it and the plan's. On this machine's KVM, guest_memfd
and KVM_SET_USER_MEMORY_REGION2 are exercised for real on the default VM type.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from runtime.vmm import kvm_abi, kvm_snp, miniguest
from runtime.vmm.errors import GuestError
from runtime.vmm.fake_kvm_snp import GENOA_CPUID, PVM_HOST_CAPS, FakeKvmSnp
from runtime.vmm.memory import GuestMemory, RamRange
from runtime.vmm.platform import kvm_unavailable_reason
from runtime.vmm.snp_cpuid import HostCpu, cpuid_page
from runtime.vmm.snp_launch import (
    CpuidRejectedError,
    RealSnpSystem,
    SnpExits,
    SnpLaunch,
    describe_cpuid_difference,
    register_private_memory,
    snp_missing_capabilities,
)
from toolchain.errors import InputError, PlatformError
from toolchain.measure.plan import LaunchPlan, Region
from toolchain.snp.digest import PAGE_SIZE, PageType

KVM_MISSING = kvm_unavailable_reason()
SNP_POLICY = 0x30000  # SMT allowed, bit 17 (must be one)
HOST_DATA = bytes(range(32))


def snp_plan(**changes: object) -> LaunchPlan:
    """The mini guest plus one region of every other launch type, as an SNP plan would have."""
    base = miniguest.mini_plan(miniguest.hello_guest())
    extra = (
        Region(0x300000, PageType.ZERO, 2 * PAGE_SIZE, None, "zero pages"),
        Region(0x302000, PageType.SECRETS, PAGE_SIZE, None, "secrets"),
        Region(0x303000, PageType.CPUID, PAGE_SIZE, None, "cpuid"),
    )
    regions = tuple(sorted((*base.regions, *extra), key=lambda r: r.gpa))
    # An snp plan's PML4 reaches its PDPT through a private entry (C-bit 51).
    regions = tuple(
        replace(r, data=_with_c_bit(r.data)) if r.label == "page tables" else r for r in regions
    )
    changes = {"platform": "snp", "c_bit": 51, **changes}
    return replace(base, regions=regions, guest_policy=SNP_POLICY, **changes)  # type: ignore[arg-type]


def _with_c_bit(tables: bytes | None) -> bytes:
    assert tables is not None
    first = int.from_bytes(tables[:8], "little") | 1 << 51
    return first.to_bytes(8, "little") + tables[8:]


def launch(fake: FakeKvmSnp, plan: LaunchPlan | None = None, **finish: object) -> SnpLaunch:
    driver = SnpLaunch(plan or snp_plan(), system=fake, vcpu_setup=fake.vcpu_setup)
    driver.launch(host_data=HOST_DATA, **finish)  # type: ignore[arg-type]
    return driver


def test_the_whole_sequence_in_order_with_its_arguments() -> None:
    fake = FakeKvmSnp()
    plan = snp_plan()
    with launch(fake, plan) as driver:
        names = fake.names()
        # Devices and capabilities, then the VM, INIT2, the exit, memory, attributes, launch.
        order = [
            "KVM_CREATE_VM",
            "KVM_SEV_INIT2",
            "KVM_ENABLE_CAP",
            "KVM_CREATE_GUEST_MEMFD",
            "KVM_SET_USER_MEMORY_REGION2",
            "KVM_SET_MEMORY_ATTRIBUTES",
            "SNP_LAUNCH_START",
            "SNP_LAUNCH_UPDATE",
            "create vcpus",
            "SNP_LAUNCH_FINISH",
        ]
        firsts = [names.index(name) for name in order]
        assert firsts == sorted(firsts)
        last_update = len(names) - 1 - names[::-1].index("SNP_LAUNCH_UPDATE")
        assert last_update < names.index("create vcpus")
        assert names[: names.index("KVM_CREATE_VM")].count("open") == 1  # /dev/kvm first
        calls = {call.name: call for call in fake.calls}
        assert calls["KVM_CREATE_VM"].args == {"type": kvm_abi.KVM_X86_SNP_VM}
        assert calls["KVM_SEV_INIT2"].args == {"vmsa_features": 0, "flags": 0, "ghcb_version": 2}
        assert calls["KVM_ENABLE_CAP"].args == {
            "cap": kvm_snp.KVM_CAP_EXIT_HYPERCALL,
            "args0": 1 << 12,
        }
        ram = plan.ram_size - PAGE_SIZE  # all but the doorbell page
        assert calls["KVM_CREATE_GUEST_MEMFD"].args == {"size": ram, "flags": 0}
        slots = [c.args for c in fake.calls if c.name == "KVM_SET_USER_MEMORY_REGION2"]
        assert [(s["gpa"], s["size"], s["offset"]) for s in slots] == [
            (0, 0x400000, 0),
            (0x401000, plan.ram_size - 0x401000, 0x400000),
        ]
        attributes = [c.args for c in fake.calls if c.name == "KVM_SET_MEMORY_ATTRIBUTES"]
        assert [(a["gpa"], a["size"]) for a in attributes] == [
            (r.gpa, r.size) for r in plan.regions
        ]
        assert {a["attributes"] for a in attributes} == {kvm_snp.KVM_MEMORY_ATTRIBUTE_PRIVATE}
        assert calls["SNP_LAUNCH_START"].args == {"policy": SNP_POLICY, "flags": 0}
        updates = [c.args for c in fake.calls if c.name == "SNP_LAUNCH_UPDATE"]
        assert [(u["gfn"] * PAGE_SIZE, u["len"], u["type"]) for u in updates] == [
            (r.gpa, r.size, int(r.page_type)) for r in plan.regions
        ]
        assert fake.finished == {
            "id_block": None,
            "id_auth": None,
            "host_data": HOST_DATA,
            "auth_key_en": 0,
            "vcek_disabled": 0,
        }
        # The three measurements agree: the VMM's, the (fake) firmware's, the plan's.
        assert driver.expected_digest() == fake.measurement == plan.launch_digest(1)
        assert driver.figures.pages == {"NORMAL": 5, "ZERO": 2, "SECRETS": 1, "CPUID": 1}
    assert fake.open_fds == {}  # every fd closed


def test_the_vcpu_count_is_an_argument_of_the_launch() -> None:
    fake = FakeKvmSnp()
    plan = snp_plan()
    with SnpLaunch(plan, vcpus=3, system=fake, vcpu_setup=fake.vcpu_setup) as driver:
        driver.launch(host_data=HOST_DATA)
        assert len(driver.vcpus) == 3
        assert driver.expected_digest() == fake.measurement == plan.launch_digest(3)
        assert fake.measurement != plan.launch_digest(plan.vcpu_count)
    with pytest.raises(InputError, match="out of range"):
        SnpLaunch(plan, vcpus=0, system=FakeKvmSnp())


def test_partial_progress_is_followed_until_len_is_zero() -> None:
    fake = FakeKvmSnp(pages_per_update=1)
    plan = snp_plan()
    with launch(fake, plan) as driver:
        pages = sum(r.pages for r in plan.regions)
        assert driver.figures.update_calls == pages == fake.update_calls
        assert driver.expected_digest() == fake.measurement == plan.launch_digest(1)


def test_eagain_is_retried_with_the_same_range() -> None:
    fake = FakeKvmSnp(eagain_updates=[1, 2, 5])
    with launch(fake) as driver:
        assert driver.figures.retries == 3
        assert driver.expected_digest() == fake.measurement


def test_endless_eagain_gives_up_naming_the_region() -> None:
    fake = FakeKvmSnp(eagain_updates=range(1, 100))
    with pytest.raises(PlatformError, match=r"LAUNCH_UPDATE NORMAL GDT and TSS at 0x1000 .*EAGAIN"):
        launch(fake)
    assert fake.open_fds == {}


def test_a_rejected_cpuid_page_is_read_back_reported_and_fails() -> None:
    corrected = bytearray(PAGE_SIZE)
    corrected[0:4] = (1).to_bytes(4, "little")  # COUNT 1
    corrected[0x10 + 0x1C : 0x10 + 0x20] = (0x80).to_bytes(4, "little")
    fake = FakeKvmSnp(reject_cpuid=bytes(corrected))
    with pytest.raises(CpuidRejectedError) as info:
        launch(fake)
    assert info.value.corrected == bytes(corrected)
    # What was handed over is the host's CPUID page (its six entries; leaf 0's EBX "Auth").
    assert info.value.handed == cpuid_page(HostCpu(GENOA_CPUID))
    message = info.value.message
    assert "INVALID_PARAM" in message
    assert f"+0x0: {len(GENOA_CPUID):#x} -> 0x1" in message
    assert "+0x2c: 0x68747541 -> 0x80" in message
    assert fake.open_fds == {}


def test_cpuid_difference_text() -> None:
    assert "no word differs" in describe_cpuid_difference(bytes(16), bytes(16))
    many = describe_cpuid_difference(bytes(64), bytes([1]) * 64)
    assert many.endswith("(and 8 more)")


def test_the_vmm_measures_the_bytes_it_hands_over_not_the_plan() -> None:
    """A byte that changed in the VMM's buffer between loading and LAUNCH_UPDATE is measured as
    it was handed over, and the launch stops: the plan's digest could never match."""
    fake = FakeKvmSnp()
    plan = snp_plan()
    driver = SnpLaunch(plan, system=fake, vcpu_setup=fake.vcpu_setup)
    with driver:
        driver.create()
        driver.start()
        assert driver.memory is not None
        driver.memory.write(plan.regions[0].gpa + 5, b"\xff")
        with pytest.raises(PlatformError, match="do not measure as the plan does") as info:
            driver.update()
        assert plan.launch_digest(1).hex() in info.value.message
        # The fake firmware saw the changed byte too: the VMM's figure is the firmware's.
        fake.vcpu_states = list(plan.vcpu_states(1))
        fake._launch_finish(
            kvm_snp.KvmSevCmd(data=ctypes.addressof(kvm_snp.KvmSevSnpLaunchFinish()))
        )
        assert fake.measurement == driver.expected_digest() != plan.launch_digest(1)


def test_inconsistent_progress_from_the_kernel_is_refused() -> None:
    with pytest.raises(PlatformError, match="inconsistent progress"):
        launch(FakeKvmSnp(liar=True))


def test_id_block_and_host_data_reach_launch_finish() -> None:
    fake = FakeKvmSnp()
    block, auth = bytes(range(96)), bytes([7]) * 4096
    with launch(fake, id_block=block, id_auth=auth):
        assert fake.finished is not None
        assert fake.finished["id_block"] == block
        assert fake.finished["id_auth"] == auth
        assert fake.finished["host_data"] == HOST_DATA


@pytest.mark.parametrize(
    ("finish", "message"),
    [
        ({"id_block": bytes(96)}, "needs its ID authentication"),
        ({"id_block": bytes(95), "id_auth": bytes(4096)}, "96 bytes"),
        ({"id_block": bytes(96), "id_auth": bytes(10)}, "4096 bytes"),
        ({"host_data": bytes(31)}, "HOST_DATA must be 32 bytes"),
    ],
)
def test_bad_finish_inputs(finish: dict[str, bytes], message: str) -> None:
    fake = FakeKvmSnp()
    with SnpLaunch(snp_plan(), system=fake, vcpu_setup=fake.vcpu_setup) as driver:
        driver.create()
        driver.start()
        driver.update()
        with pytest.raises(InputError, match=message):
            driver.finish(**finish)  # type: ignore[arg-type]
        assert driver.step == "updated"
    assert "SNP_LAUNCH_FINISH" not in fake.names()


def test_steps_out_of_order_are_refused() -> None:
    fake = FakeKvmSnp()
    with SnpLaunch(snp_plan(), system=fake, vcpu_setup=fake.vcpu_setup) as driver:
        with pytest.raises(InputError, match="out of order"):
            driver.start()
        driver.create()
        with pytest.raises(InputError, match="out of order"):
            driver.update()


def test_a_host_without_snp_is_told_what_is_missing() -> None:
    fake = FakeKvmSnp(caps=PVM_HOST_CAPS)
    with pytest.raises(PlatformError) as info:
        launch(fake)
    message = info.value.message
    assert "KVM_CAP_VM_TYPES 0x1 lacks KVM_X86_SNP_VM" in message
    assert "no KVM_CAP_MEMORY_ATTRIBUTES" in message
    assert "KVM_CREATE_VM" not in fake.names()
    assert fake.open_fds == {}


def test_no_dev_sev() -> None:
    fake = FakeKvmSnp(sev_device=False)
    with pytest.raises(PlatformError, match="/dev/sev does not exist"):
        launch(fake)
    assert fake.open_fds == {}


def test_sev_features_kvm_does_not_offer_are_refused() -> None:
    fake = FakeKvmSnp()
    with pytest.raises(PlatformError, match=r"need bits 0x4 .*supported: 0x20"):
        launch(fake, snp_plan(sev_features=0x5))
    assert "KVM_CREATE_VM" not in fake.names()


def test_sev_features_without_snp_active_are_not_an_snp_plan() -> None:
    with pytest.raises(InputError, match="lack SNP_ACTIVE"):
        SnpLaunch(snp_plan(sev_features=0x20), system=FakeKvmSnp())


def test_debug_swap_reaches_init2_without_snp_active() -> None:
    fake = FakeKvmSnp()
    plan = snp_plan(sev_features=0x21)
    with launch(fake, plan) as driver:
        init = next(c for c in fake.calls if c.name == "KVM_SEV_INIT2")
        assert init.args["vmsa_features"] == 0x20
        assert driver.expected_digest() == fake.measurement == plan.launch_digest(1)


# ---- the run loop's SNP exits ------------------------------------------------------------------
def exits_on_fake() -> tuple[SnpExits, FakeKvmSnp, SnpLaunch]:
    fake = FakeKvmSnp()
    driver = launch(fake)
    return driver.exits(), fake, driver


def hypercall(nr: int, *args: int) -> kvm_abi.KvmRun:
    run = kvm_abi.KvmRun()
    run.exit_reason = kvm_abi.KVM_EXIT_HYPERCALL
    run.hypercall.nr = nr
    for index, value in enumerate(args):
        run.hypercall.args[index] = value
    run.hypercall.ret = 0xDEAD
    return run


def test_map_gpa_range_converts_both_ways() -> None:
    exits, fake, driver = exits_on_fake()
    with driver:
        heap = 0x2000000
        run = hypercall(12, heap, 512, kvm_snp.KVM_MAP_GPA_RANGE_ENCRYPTED | 1)
        assert exits.on_hypercall(run) is None
        assert run.hypercall.ret == 0
        assert set(range(heap // PAGE_SIZE, heap // PAGE_SIZE + 512)) <= fake.private
        run = hypercall(12, heap, 1, kvm_snp.KVM_MAP_GPA_RANGE_DECRYPTED)
        exits.on_hypercall(run)
        assert heap // PAGE_SIZE not in fake.private
        assert (exits.to_private, exits.to_shared) == (512, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0x2000800, 1, 0x10), "not 4 KiB aligned"),
        ((0x2000000, 0, 0x10), "0 pages"),
        ((0x2000000, 1 << 52, 0x10), "pages at"),
        ((0xFFFFFFFFFFFFF000, 2, 0x10), "pages at"),
        ((0x4000000, 1, 0x10), "not inside the keep's private-capable RAM"),
        ((0x3FFF000, 2, 0x10), "not inside"),
        ((0x3FF000, 2, 0x10), "not inside"),  # across the doorbell hole
        ((0x400000, 1, 0x10), "not inside"),  # the doorbell itself
        ((0x2000000, 1, 0x30), "unknown attribute bits"),
        ((0x2000000, 1, 0x13), "page size 3 is not 4K/2M/1G"),
    ],
)
def test_hostile_map_gpa_range_ends_the_keep(args: tuple[int, int, int], message: str) -> None:
    exits, fake, driver = exits_on_fake()
    with driver:
        before = set(fake.private)
        with pytest.raises(GuestError, match=message) as info:
            exits.on_hypercall(hypercall(12, *args))
        assert info.value.call == "MAP_GPA_RANGE"
        assert fake.private == before  # nothing converted


def test_other_hypercalls_end_the_keep() -> None:
    exits, _fake, driver = exits_on_fake()
    with driver, pytest.raises(GuestError, match="hypercall 5"):
        exits.on_hypercall(hypercall(5))


def test_a_host_refusal_during_conversion_ends_the_keep_not_the_vmm() -> None:
    exits, fake, driver = exits_on_fake()
    with driver:
        fake.caps[kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES] = 0
        with pytest.raises(GuestError, match=r"could not make 0x2000000.*ENOTTY"):
            exits.on_hypercall(hypercall(12, 0x2000000, 1, 0x10))


def test_memory_fault_ends_the_keep_naming_the_page() -> None:
    exits, _fake, driver = exits_on_fake()
    run = kvm_abi.KvmRun()
    run.exit_reason = kvm_abi.KVM_EXIT_MEMORY_FAULT
    run.memory_fault.flags = kvm_snp.KVM_MEMORY_EXIT_FLAG_PRIVATE
    run.memory_fault.gpa = 0x2000000
    run.memory_fault.size = PAGE_SIZE
    with driver, pytest.raises(GuestError) as info:
        exits.on_memory_fault(run)
    assert "0x2000000+0x1000 (inside its RAM) as private memory while the page is shared" in (
        info.value.message
    )
    run.memory_fault.flags = 0x1
    with pytest.raises(GuestError, match=r"as shared memory.*unknown fault flags 0x1"):
        exits.on_memory_fault(run)


def test_a_termination_request_ends_the_keep_saying_no_reason_was_sent() -> None:
    """The microkernel's stop before GHCB registration (GHCB MSR 0x100) arrives as KVM's
    SEV_TERM system event; any other system event ends the keep too, naming it."""
    exits, _fake, driver = exits_on_fake()
    run = kvm_abi.KvmRun()
    run.exit_reason = kvm_abi.KVM_EXIT_SYSTEM_EVENT
    run.system_event.type = kvm_snp.KVM_SYSTEM_EVENT_SEV_TERM
    run.system_event.ndata = 1
    run.system_event.data[0] = 0x100
    with driver, pytest.raises(GuestError) as info:
        exits.on_system_event(run)
    assert "stopped itself before its GHCB was registered" in info.value.message
    assert "request 0x100: reason set 0, code 0" in info.value.message
    run.system_event.type = 1  # KVM_SYSTEM_EVENT_SHUTDOWN
    with pytest.raises(GuestError, match=r"system event 1 \(only the SEV termination request, 6"):
        exits.on_system_event(run)


# ---- for real, on this machine's KVM -----------------------------------------------------------
def _real_caps() -> dict[int, int]:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        system = RealSnpSystem()
        return {
            cap: system.ioctl(fd, kvm_abi.KVM_CHECK_EXTENSION, cap)
            for cap in (kvm_snp.KVM_CAP_GUEST_MEMFD, kvm_snp.KVM_CAP_USER_MEMORY2)
        }
    finally:
        os.close(fd)


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}")
def test_guest_memfd_and_region2_on_the_default_vm_for_real() -> None:
    caps = _real_caps()
    if not all(caps.values()):
        pytest.skip(
            f"this host's KVM lacks guest_memfd or KVM_SET_USER_MEMORY_REGION2 ({caps}): "
            "the fake covers them"
        )
    system = RealSnpSystem()
    kvm_fd = system.open("/dev/kvm")
    vm_fd = system.ioctl(kvm_fd, kvm_abi.KVM_CREATE_VM, kvm_abi.KVM_X86_DEFAULT_VM)
    memory = GuestMemory([RamRange(0, 0x200000), RamRange(0x201000, 0x1FF000)])
    try:
        gmem = register_private_memory(system, vm_fd, memory)
        try:
            assert gmem > 2
            assert os.fstat(gmem).st_size == memory.size  # the guest_memfd holds all of RAM
            # A third slot past the guest_memfd's end is refused by KVM, and said so.
            bad = GuestMemory([RamRange(0x400000, 0x1000)])
            region = kvm_snp.KvmUserspaceMemoryRegion2(
                slot=7,
                flags=kvm_snp.KVM_MEM_GUEST_MEMFD,
                guest_phys_addr=0x400000,
                memory_size=0x1000,
                userspace_addr=bad.host_address(0x400000, 0x1000),
                guest_memfd_offset=memory.size,
                guest_memfd=gmem,
            )
            with pytest.raises(OSError) as info:
                system.ioctl(vm_fd, kvm_snp.KVM_SET_USER_MEMORY_REGION2, region)
            assert info.value.errno == errno.EINVAL
            bad.close()
        finally:
            system.close(gmem)
    finally:
        system.close(vm_fd)
        system.close(kvm_fd)
        memory.close()


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}")
def test_this_host_says_why_it_cannot_launch_snp() -> None:
    system = RealSnpSystem()
    fd = system.open("/dev/kvm")
    try:
        missing = snp_missing_capabilities(system, fd)
    finally:
        system.close(fd)
    if not missing and Path("/dev/sev").exists():
        pytest.skip("this host can launch SNP guests: tests/hardware/ covers it")
    with pytest.raises(PlatformError) as info, SnpLaunch(snp_plan()) as driver:
        driver.create()
    assert ("cannot launch an SNP guest" in info.value.message) or (
        "/dev/sev" in info.value.message
    )
    assert driver.kvm_fd == driver.vm_fd == -1


def test_the_real_firmware_points_at_the_driver() -> None:
    from runtime.firmware.snp import SnpFirmware

    with pytest.raises(PlatformError, match="KVM issues the launch commands") as info:
        SnpFirmware().launch_update(PageType.NORMAL, 0, bytes(PAGE_SIZE))
    assert "runtime/vmm/snp_launch.py" in info.value.message


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}")
def test_the_snp_exits_are_served_by_a_real_vcpus_run_loop() -> None:
    """``SnpExits.install`` hooks both exits into ``Vcpu.handle_exit`` (on its real run page).

    (A real KVM_EXIT_HYPERCALL cannot be provoked here: under PVM a VMCALL from the emulated
    ring 0 never returns, and from ring 3 KVM refuses it without an exit.)
    """
    from runtime.vmm.vm import Vm

    exits, fake, driver = exits_on_fake()
    with driver, Vm([RamRange(0, 0x200000)]) as vm:
        vcpu = vm.vcpus[0]
        exits.install(vcpu)
        run = vcpu.run_struct
        run.exit_reason = kvm_abi.KVM_EXIT_HYPERCALL
        run.hypercall.nr = kvm_snp.KVM_HC_MAP_GPA_RANGE
        run.hypercall.args[0], run.hypercall.args[1] = 0x2000000, 16
        run.hypercall.args[2] = kvm_snp.KVM_MAP_GPA_RANGE_ENCRYPTED
        assert vcpu.handle_exit(run, doorbell_gpa=0x400000, on_doorbell=lambda: None) is None
        assert exits.to_private == 16
        assert 0x2000000 // PAGE_SIZE in fake.private
        run.exit_reason = kvm_abi.KVM_EXIT_MEMORY_FAULT
        run.memory_fault.gpa, run.memory_fault.size = 0x5000, PAGE_SIZE
        with pytest.raises(GuestError, match="KVM_EXIT_MEMORY_FAULT"):
            vcpu.handle_exit(run, doorbell_gpa=0x400000, on_doorbell=lambda: None)
        assert vcpu.exit_counts == {"HYPERCALL": 1, "MEMORY_FAULT": 1}


@pytest.mark.slow
def test_the_example_keep_launches_through_the_driver(tmp_path: Path) -> None:
    """The real example keep's snp plan (secrets and CPUID pages included) through the whole
    sequence: the VMM's digest, the fake firmware's (KVM's VMSAs) and the snp plan's agree and
    are the snp digest keep build reports, and the GHCB and hypercall pages stay shared."""
    from runtime.run.backends import snp_plan as build_snp_plan
    from toolchain.image.keep_build import build_keep
    from toolchain.measure.keep import GHCB_PAGE

    hello = Path(__file__).resolve().parent.parent / "examples" / "hello" / "hello.wat"
    build = build_keep(hello, tmp_path / "out", vcpu_counts=(1,))
    simulated = build.plan
    with pytest.raises(InputError, match="simulated platform, not snp"):
        SnpLaunch(simulated, system=FakeKvmSnp())
    plan = build_snp_plan(build)
    fake = FakeKvmSnp()
    with SnpLaunch(plan, system=fake, vcpu_setup=fake.vcpu_setup) as driver:
        assert driver.launch() == fake.measurement == plan.launch_digest(1)
        assert fake.measurement == build.snp_launch_digests()["genoa"][1]
        assert fake.measurement != simulated.launch_digest(1)
        types = {PageType(c.args["type"]) for c in fake.calls if c.name == "SNP_LAUNCH_UPDATE"}
        assert {PageType.SECRETS, PageType.CPUID, PageType.NORMAL} <= types
        abi = plan.abi
        shared = {abi.hc_page // PAGE_SIZE, GHCB_PAGE // PAGE_SIZE} | set(
            range(abi.hc_buffer // PAGE_SIZE, (abi.hc_buffer + abi.hc_buffer_size) // PAGE_SIZE)
        )
        assert len(shared) == 2 + abi.hc_buffer_size // PAGE_SIZE
        assert not fake.private.intersection(shared)
        assert fake.private == {
            gfn for r in plan.regions for gfn in range(r.gpa // PAGE_SIZE, r.end // PAGE_SIZE)
        }


def test_a_refused_private_conversion_at_launch_is_a_platform_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKvmSnp()

    def refuse(kind: str, arg: object) -> int:
        raise OSError(errno.EFAULT, "Bad address")

    monkeypatch.setattr(fake, "_attributes", refuse)
    with pytest.raises(PlatformError, match=r"MEMORY_ATTRIBUTES\(PRIVATE\) GDT and TSS .*EFAULT"):
        launch(fake)
    assert fake.open_fds == {}


_IMPORTS_FAKE = re.compile(
    r"^\s*(from runtime\.vmm\.fake_kvm_snp import|import runtime\.vmm\.fake_kvm_snp"
    r"|from runtime\.vmm import .*\bfake_kvm_snp\b)",
    re.MULTILINE,
)


def test_nothing_in_the_product_imports_the_fake() -> None:
    root = Path(__file__).resolve().parent.parent
    importers = [
        path.relative_to(root).as_posix()
        for top in ("keep", "toolchain", "runtime")
        for path in (root / top).rglob("*.py")
        if _IMPORTS_FAKE.search(path.read_text(encoding="utf-8"))
    ]
    assert importers == []
