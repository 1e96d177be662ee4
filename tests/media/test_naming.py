"""Upload names of job inputs: short enough for any file system, deterministic, distinct."""

from __future__ import annotations

import pytest

from comfyui_worker.media.naming import MAX_UPLOAD_NAME, upload_name

PID = "6c2f0d2e-1111-2222-3333-444455556666"


def test_a_plain_name_keeps_its_form() -> None:
    assert upload_name(PID, "photo.png") == f"{PID}-photo.png"


@pytest.mark.parametrize(
    "name",
    ["p" * 219 + ".png", "p" * 400 + ".webm", "q" * 300, "x." + "e" * 300, "a/" + "ü" * 200],
)
def test_a_long_name_is_shortened_deterministically_keeping_its_extension(name: str) -> None:
    uploaded = upload_name(PID, name)
    assert len(uploaded.encode()) <= MAX_UPLOAD_NAME and uploaded.startswith(f"{PID}-")
    assert uploaded == upload_name(PID, name)
    if name.endswith((".png", ".webm")):
        assert uploaded.endswith(name[name.rindex(".") :])


def test_long_names_alike_at_the_start_stay_apart() -> None:
    base = "p" * 300
    names = [base + ".png", base + "x.png", base + ".jpg", "a/" + base, "b/" + base]
    assert len({upload_name(PID, n) for n in names}) == len(names)


def test_a_very_long_prompt_id_still_fits() -> None:
    uploaded = upload_name("k" * 300, "photo.png")
    assert len(uploaded) <= MAX_UPLOAD_NAME and uploaded.endswith(".png")
