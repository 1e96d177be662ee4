"""A mock ComfyUI server for tests."""
