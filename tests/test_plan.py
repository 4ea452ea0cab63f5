"""LaunchPlan: digest against an independent PAGE_INFO implementation, JSON round trip, checks."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ukernel_images import Images, build_images

from toolchain.errors import InputError
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import PLAN_FILE, LaunchPlan, Region
from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import vmsa_page

VMSA_GPA = 0xFFFFFFFFF000


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> LaunchPlan:
    base = tmp_path_factory.mktemp("plan")
    images: Images = build_images(base / "out", cache_dir=base / "cache")
    return build_plan(images.ukernel, images.user, vcpu_count=2)


def reference_digest(pages: list[tuple[int, int, bytes | None]]) -> bytes:
    """SHA-384 chain over 112-byte PAGE_INFO records, written from the vectors' conventions."""
    digest = bytes(48)
    for gpa, page_type, data in pages:
        contents = hashlib.sha384(data).digest() if page_type in (1, 2) else bytes(48)
        info = digest + contents + struct.pack("<HBBBBBBQ", 0x70, page_type, 0, 0, 0, 0, 0, gpa)
        digest = hashlib.sha384(info).digest()
    return digest


def test_digest_matches_independent_page_info_chain(plan: LaunchPlan) -> None:
    for count in (1, 2, 3):
        pages: list[tuple[int, int, bytes | None]] = [
            (gpa, int(kind), data) for gpa, kind, data in plan.pages()
        ]
        pages += [(VMSA_GPA, 2, page) for page in plan.vmsa_pages(count)]
        assert plan.launch_digest(count) == reference_digest(pages)


def test_digest_differs_per_vcpu_count_and_boot_cpu_comes_first(plan: LaunchPlan) -> None:
    digests = plan.launch_digests([1, 2, 4])
    assert len(set(digests.values())) == 3
    assert plan.launch_digest(2) == digests[2]
    assert plan.launch_digest(4) == digests[4]  # the count is the launch's, not the plan's
    boot, ap = plan.vmsa_pages(2)
    assert boot == vmsa_page(plan.boot_vcpu, sev_features=plan.sev_features)
    assert ap == vmsa_page(plan.ap_vcpu, sev_features=plan.sev_features)
    assert boot != ap


def test_json_round_trip_is_exact_and_deterministic(plan: LaunchPlan) -> None:
    text = plan.to_json()
    again = LaunchPlan.from_json(text)
    assert again == plan
    assert again.to_json() == text
    document = json.loads(text)
    assert document["launch_digest"] == plan.launch_digest(2).hex()  # the recorded count's
    assert document["vcpu_count"] == 2


def _tamper(text: str, edit: object) -> str:
    document = json.loads(text)
    edit(document)  # type: ignore[operator]
    return json.dumps(document)


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("digest", lambda d: d.update(launch_digest="00" * 48)),
        (
            "region bytes",
            lambda d: d["regions"][0].update(data="////" + d["regions"][0]["data"][4:]),
        ),
        ("region type", lambda d: d["regions"][0].update(type="NOPE")),
        ("missing abi", lambda d: d.pop("abi")),
        ("vcpu field", lambda d: d["boot_vcpu"].update(bogus=1)),
        ("vcpu count", lambda d: d.update(vcpu_count=0)),
        ("format", lambda d: d.update(format="other")),
        ("overlap", lambda d: d["regions"][1].update(gpa=d["regions"][0]["gpa"])),
    ],
)
def test_malformed_plan_json_is_input_error(plan: LaunchPlan, what: str, edit: object) -> None:
    with pytest.raises(InputError):
        LaunchPlan.from_json(_tamper(plan.to_json(), edit))


def test_not_json_is_input_error() -> None:
    with pytest.raises(InputError):
        LaunchPlan.from_json("{not json")
    with pytest.raises(InputError):
        LaunchPlan.from_json("[]")


def test_region_checks() -> None:
    with pytest.raises(InputError):
        Region(0x1001, PageType.ZERO, 4096)
    with pytest.raises(InputError):
        Region(0x1000, PageType.NORMAL, 4096, b"short")
    with pytest.raises(InputError):
        Region(0x1000, PageType.ZERO, 4096, bytes(4096))
    with pytest.raises(InputError):
        Region(0x1000, PageType.VMSA, 4096, bytes(4096))
    with pytest.raises(InputError):
        Region(0x1000, PageType.ZERO, 100)


def test_plan_refuses_regions_beyond_ram_or_on_the_doorbell(plan: LaunchPlan) -> None:
    with pytest.raises(InputError):
        replace(plan, regions=(Region(plan.ram_size, PageType.ZERO, 4096),))
    with pytest.raises(InputError):
        replace(plan, regions=(Region(plan.abi.doorbell, PageType.ZERO, 4096),))


def test_memory_ranges_leave_out_only_the_doorbell(plan: LaunchPlan) -> None:
    ranges = plan.memory_ranges()
    assert ranges == [
        (0, plan.abi.doorbell),
        (plan.abi.doorbell + 4096, plan.ram_size - plan.abi.doorbell - 4096),
    ]


def test_plan_file_written_and_read(plan: LaunchPlan, tmp_path: Path) -> None:
    path = tmp_path / PLAN_FILE
    path.write_text(plan.to_json(), encoding="utf-8")
    assert LaunchPlan.load(path).launch_digest(2) == plan.launch_digest(2)


def _json_paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            found += _json_paths(value, (*prefix, index))
    return found


ODD_VALUES = st.sampled_from(
    [None, -1, 0, 1 << 70, "x", 1.5, True, [], {}, {"hex": "zz"}, {"selector": 1}]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_edited_plan_json_is_read_or_refused_never_crashes(
    plan: LaunchPlan, data: st.DataObject
) -> None:
    text = plan.to_json()
    document = json.loads(text)
    paths = _json_paths(document)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(paths))
        node = document
        try:
            for key in path[:-1]:
                node = node[key]  # type: ignore[index]
            # A copy: the sampled [] and {} are shared, and an edit inside one would leak into
            # later examples (even making it contain itself: a circular reference).
            node[path[-1]] = copy.deepcopy(data.draw(ODD_VALUES))  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            continue
    if data.draw(st.booleans()):
        document.pop("launch_digest", None)
    with contextlib.suppress(InputError):
        LaunchPlan.from_json(json.dumps(document))
