"""comfyui-mock: run the mock ComfyUI server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from comfyui_mock.server import MockComfyUI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfyui-mock",
        description="A mock ComfyUI server: same HTTP and websocket API, simulated generation.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8188, help="port (0 lets the OS choose)")
    parser.add_argument("--output-dir", required=True, help="where save nodes write their files")
    parser.add_argument("--temp-dir", help="where preview nodes write (default: a fresh temp dir)")
    parser.add_argument("--input-dir", help="where uploads go (default: a fresh temp dir)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds each prompt takes to execute"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = MockComfyUI(
        args.output_dir, args.temp_dir, args.input_dir, args.host, args.port, args.delay
    )
    await server.start()
    print(f"comfyui-mock listening on {server.url}", flush=True)
    print(
        f"  output: {server.output_dir}\n  temp:   {server.temp_dir}\n  input:  {server.input_dir}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
