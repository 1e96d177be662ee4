"""Run ComfyUI workflows as LittleHorse tasks."""
