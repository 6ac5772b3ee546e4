"""``ids.new_id``: UUIDv7 layout, time order, randomness."""

from __future__ import annotations

import time
import uuid

from medsecrets.ids import new_id


def test_the_rfc_9562_example_is_reproduced() -> None:
    # RFC 9562, appendix A.6: unix_ts_ms 0x017F22E279B0, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F
    bits = (0xCC3 << 62) | 0x18C4DC0C0C07398F
    made = new_id(now_ns=0x017F22E279B0 * 1_000_000, random=bits.to_bytes(10, "big"))
    assert made == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"


def test_ids_are_version_7_with_the_rfc_variant_and_the_time_in_front() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(new_id())
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after_as_text() -> None:
    base = 1_700_000_000_000 * 1_000_000
    ids = [new_id(now_ns=base + ms * 1_000_000) for ms in (0, 1, 2, 1_000, 86_400_000)]
    assert ids == sorted(ids)


def test_ids_of_one_millisecond_differ_in_74_random_bits() -> None:
    made = {new_id(now_ns=1_700_000_000_000 * 1_000_000) for _ in range(10_000)}
    assert len(made) == 10_000
    spread = 0
    for text in made:
        spread |= uuid.UUID(text).int ^ uuid.UUID(next(iter(made))).int
    assert spread == (0xFFF << 64) | ((1 << 62) - 1)  # every random bit varies, nothing else
