"""Tests that kill the mutants of ``toolchain.measure.plan`` the plan suite let survive
(tests/MUTATION.md): the plan's bounds (vCPU count, 64-bit policy and features, RAM size), where
regions may and may not lie, and the RAM the VMM backs. The plan is the real one ``keep build``
makes from the microkernel and user images, edited one field at a time."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from ukernel_images import Images, build_images

from toolchain.errors import InputError
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import MAX_VCPUS, LaunchPlan, Region
from toolchain.snp.digest import PAGE_SIZE, PageType


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> LaunchPlan:
    base = tmp_path_factory.mktemp("plan")
    images: Images = build_images(base / "out", cache_dir=base / "cache")
    return build_plan(images.ukernel, images.user, vcpu_count=2)


def test_vcpu_count_is_1_to_64_inclusive(plan: LaunchPlan) -> None:
    assert MAX_VCPUS == 64
    for count in (1, MAX_VCPUS):
        assert replace(plan, vcpu_count=count).vcpu_count == count
        assert len(plan.vcpu_states(count)) == count
    for count in (0, MAX_VCPUS + 1, True):
        with pytest.raises(InputError, match=r"vCPU count .* out of range 1..64"):
            replace(plan, vcpu_count=count)
    for count in (0, MAX_VCPUS + 1):
        with pytest.raises(InputError, match=r"vCPU count .* out of range 1..64"):
            plan.vcpu_states(count)


@pytest.mark.parametrize("name", ["guest_policy", "sev_features"])
def test_policy_and_features_are_64_bit(plan: LaunchPlan, name: str) -> None:
    assert getattr(replace(plan, **{name: (1 << 64) - 1}), name) == (1 << 64) - 1
    assert getattr(replace(plan, **{name: 0}), name) == 0
    for value in (1 << 64, -1, True):
        with pytest.raises(InputError, match=f"{name} .* is not a 64-bit value"):
            replace(plan, **{name: value})


def test_ram_size_is_a_positive_multiple_of_a_page(plan: LaunchPlan) -> None:
    for size in (0, -PAGE_SIZE, plan.ram_size + 1):
        with pytest.raises(InputError, match="RAM size"):
            replace(plan, ram_size=size)


def test_regions_may_touch_but_not_overlap_and_may_end_at_ram(plan: LaunchPlan) -> None:
    door = plan.abi.doorbell
    first = Region(0, PageType.ZERO, PAGE_SIZE, label="first")
    touching = Region(PAGE_SIZE, PageType.ZERO, PAGE_SIZE, label="touching")
    assert replace(plan, regions=(first, touching)).regions == (first, touching)
    with pytest.raises(InputError, match="overlap or are out of order"):
        replace(plan, regions=(touching, first))
    with pytest.raises(InputError, match="overlap or are out of order"):
        replace(plan, regions=(Region(0, PageType.ZERO, 2 * PAGE_SIZE), touching))
    last = Region(plan.ram_size - PAGE_SIZE, PageType.ZERO, PAGE_SIZE, label="last")
    assert replace(plan, regions=(last,)).regions == (last,)
    beyond = Region(plan.ram_size - PAGE_SIZE, PageType.ZERO, 2 * PAGE_SIZE, label="beyond")
    with pytest.raises(InputError, match="beyond RAM"):
        replace(plan, regions=(beyond,))
    # The pages either side of the doorbell may be launched; the doorbell may not.
    below = Region(door - PAGE_SIZE, PageType.ZERO, PAGE_SIZE, label="below")
    above = Region(door + PAGE_SIZE, PageType.ZERO, PAGE_SIZE, label="above")
    assert replace(plan, regions=(below, above)).regions == (below, above)
    with pytest.raises(InputError, match="covers the MMIO doorbell"):
        replace(plan, regions=(Region(door - PAGE_SIZE, PageType.ZERO, 2 * PAGE_SIZE),))


def test_region_gpa_and_size_bounds() -> None:
    assert Region(0, PageType.ZERO, PAGE_SIZE).pages == 1
    assert Region(PAGE_SIZE, PageType.ZERO, 3 * PAGE_SIZE).end == 4 * PAGE_SIZE
    for gpa in (-PAGE_SIZE, 1.5):
        with pytest.raises(InputError, match="GPA must be"):
            Region(gpa, PageType.ZERO, PAGE_SIZE)  # type: ignore[arg-type]
    for size in (0, -PAGE_SIZE, PAGE_SIZE + 1):
        with pytest.raises(InputError, match="positive multiple"):
            Region(0, PageType.ZERO, size)


def test_memory_ranges_at_the_edges_of_ram(plan: LaunchPlan) -> None:
    abi_at_zero = replace(plan.abi, doorbell=0)
    at_zero = replace(plan, regions=(), abi=abi_at_zero)
    assert at_zero.memory_ranges() == [(PAGE_SIZE, plan.ram_size - PAGE_SIZE)]
    abi_at_top = replace(plan.abi, doorbell=plan.ram_size - PAGE_SIZE)
    at_top = replace(plan, regions=(), abi=abi_at_top)
    assert at_top.memory_ranges() == [(0, plan.ram_size - PAGE_SIZE)]


def test_page_counts_are_the_launched_pages(plan: LaunchPlan) -> None:
    counts = plan.page_counts(3)
    assert counts["VMSA"] == 3
    assert sum(counts.values()) == sum(1 for _ in plan.pages()) + 3
    for kind in {r.page_type for r in plan.regions}:
        assert counts[kind.name] == sum(r.size for r in plan.regions if r.page_type is kind) // 4096


def test_every_abi_address_is_a_non_negative_integer(plan: LaunchPlan) -> None:
    for name in ("doorbell", "secrets_page", "user_entry", "stack_bottom"):
        assert getattr(replace(plan.abi, **{name: 0}), name) == 0
        for bad in (-1, True, "0x1000"):
            with pytest.raises(InputError, match=f"ABI address {name} must be a non-negative"):
                replace(plan.abi, **{name: bad})


def test_the_plan_file_form_is_pinned(plan: LaunchPlan) -> None:
    # launch-plan.json ships in a release (its SHA-256 is a signed subject): one-space indent,
    # sorted keys, a final newline, so rebuilding it gives the same bytes.
    text = plan.to_json()
    lines = text.splitlines()
    assert (lines[0], lines[1]) == ("{", ' "abi": {')
    assert lines[2].startswith('  "abi_version": ')
    assert text.endswith("}\n")


@pytest.mark.parametrize("value", [5, [], "state"])
def test_a_vcpu_state_that_is_not_an_object_is_named(plan: LaunchPlan, value: object) -> None:
    document = json.loads(plan.to_json())
    document["ap_vcpu"] = value
    with pytest.raises(InputError, match="a vCPU state in the launch plan is not an object"):
        LaunchPlan.from_json(json.dumps(document))
