"""The start check of COMFYUI_OUTPUT_DIR / COMFYUI_TEMP_DIR through the mock ComfyUI's API."""

from __future__ import annotations

import httpx
import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.exceptions import ConfigurationError, ServerError
from comfyui_worker.folders import PROBE_NAME, PROBE_SUBFOLDER, check_folders
from comfyui_worker.outputs import OutputDirs
from mock_settings import settings_for


def dirs_of(mock: MockHandle, **changes: object) -> OutputDirs:
    values = {"output": mock.output_dir, "temp": mock.temp_dir} | changes
    return OutputDirs(**values)  # type: ignore[arg-type]


class OtherWorkerWrites(httpx.AsyncBaseTransport):
    """Forwards to the mock; right after the first check file lands, another worker starting
    against the same ComfyUI writes its own into the same place."""

    def __init__(self, mock: MockHandle) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._mock = mock
        self.uploads = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path == "/upload/image":
            self.uploads += 1
            if self.uploads == 1:
                path = self._mock.output_dir / PROBE_SUBFOLDER / PROBE_NAME
                path.write_bytes(b"comfyui-worker folder check someone-else\n")
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_the_right_folders_pass_even_with_another_worker_checking(
    comfyui_mock: MockHandle,
) -> None:
    transport = OtherWorkerWrites(comfyui_mock)
    settings = settings_for(comfyui_mock)
    async with ComfyUIClient.from_settings(settings, transport=transport) as client:
        await check_folders(client, dirs_of(comfyui_mock))
    assert transport.uploads == 3  # output twice (raced), then temp
    assert (comfyui_mock.temp_dir / PROBE_SUBFOLDER / PROBE_NAME).is_file()


async def test_a_folder_that_does_not_show_comfyuis_file_names_the_variable(
    comfyui_mock: MockHandle,
) -> None:
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock)) as client:
        with pytest.raises(ConfigurationError) as info:
            await check_folders(client, dirs_of(comfyui_mock, output=comfyui_mock.input_dir))
    message = str(info.value)
    assert f"COMFYUI_OUTPUT_DIR={comfyui_mock.input_dir} is not ComfyUI's output folder" in message
    assert "does not exist" in message and "set COMFYUI" not in message


async def test_a_comfyui_that_refuses_the_file_leaves_the_check_undone(
    comfyui_mock: MockHandle,
) -> None:
    comfyui_mock.fail_http(count=10, path="/upload/image", status=503)
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock, retries=0)) as client:
        with pytest.raises(ServerError):
            await check_folders(client, dirs_of(comfyui_mock))
