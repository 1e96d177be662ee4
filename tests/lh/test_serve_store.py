"""`serve` with its output store configured in `.env`: the store's own variables (AWS_*)
work from there as from the environment, and a store that cannot work stops the start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse
from lh.serve_process import (
    serve_env,
    serve_one_task,
    start_serve,
)
from s3_server import S3, SECRET


def without_aws(env: dict[str, str]) -> dict[str, str]:
    """What the `s3` fixture exported for this process stays out of serve's environment."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


async def test_store_credentials_from_dot_env_deliver_the_outputs(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "COMFYUI_OUTPUT_MODE=store\n"
        f"COMFYUI_OUTPUT_STORE=s3://{s3.bucket}/jobs\n"
        f"AWS_ENDPOINT_URL={s3.endpoint}\n"
        "AWS_ACCESS_KEY_ID=testing\n"
        f"AWS_SECRET_ACCESS_KEY={SECRET}\n"
        "AWS_REGION=us-east-1\n"
        "AWS_ALLOW_HTTP=true\n"
    )
    env = without_aws(serve_env(fake, comfyui_mock))
    # Were the keys ignored, obstore would ask the instance-metadata service: here, on
    # loopback, where nothing answers.
    env["AWS_METADATA_ENDPOINT"] = "http://127.0.0.1:9"
    report, output = await serve_one_task(fake, env, tmp_path)
    assert report.status == "TASK_SUCCESS", report.error_message
    (uri,) = report.output["outputs"]
    assert uri.startswith(f"s3://{s3.bucket}/jobs/")
    assert s3.keys("jobs/") == [uri.removeprefix(f"s3://{s3.bucket}/")]
    assert SECRET not in output


async def test_a_store_without_credentials_stops_serve_before_any_task(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"COMFYUI_OUTPUT_MODE=store\nCOMFYUI_OUTPUT_STORE=s3://{s3.bucket}/jobs\n"
    )
    env = without_aws(serve_env(fake, comfyui_mock))
    env.update(
        {
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            # The instance-metadata service, where obstore looks without keys, on loopback.
            "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    proc = await start_serve(env, tmp_path)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    output = out.decode()
    assert proc.returncode == 3, output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert line.startswith(f"comfyui-worker: error: COMFYUI_OUTPUT_STORE=s3://{s3.bucket}/jobs")
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in line and "Traceback" not in output
    assert fake.pollers(TASK_NAME) == 0 and TASK_NAME not in fake.task_defs
