"""The LittleHorse side: the `execute-comfyui-workflow` task, its errors, serve and register."""

from .sdk_imports import defer_oauth_import

# Before any module of this package imports the SDK.
defer_oauth_import()
