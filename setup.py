"""Builds the optional compiled fan-out; everything else is in pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and Confero runs the pure-Python
engine (`confero.media.fanout`), which logs that it does.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "confero.media._fanout",
            ["src/confero/media/_fanout.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
