"""pytest plugin: the `comfyui_mock` fixture (filled in with the mock server)."""
