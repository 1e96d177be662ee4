"""The LittleHorse side: the `execute-comfyui-workflow` task, its errors, serve and register."""
